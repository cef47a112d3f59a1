"""Registry of classes that can be rebuilt from their config (layers, models, optimizers, ...)."""

from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register_serializable(cls=None, *, name: str | None = None):
    """Class decorator: make ``cls`` loadable by ``load_model`` under ``name`` (default: its class name)."""

    def wrap(c):
        _REGISTRY[name or c.__name__] = c
        return c

    return wrap(cls) if cls is not None else wrap


def serialize(obj) -> dict:
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def lookup(class_name: str, custom_objects=None, kind: str = "object") -> type:
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    try:
        return _REGISTRY[class_name]
    except KeyError:
        raise ValueError(f"unknown {kind} class {class_name!r}: pass it in custom_objects or decorate it with "
                         "convkit.saving.register_serializable") from None


def deserialize(d: dict, custom_objects=None, kind: str = "object"):
    if not isinstance(d, dict) or "class_name" not in d:
        raise ValueError(f"bad {kind} config: expected a dict with 'class_name', got {d!r}")
    return lookup(d["class_name"], custom_objects, kind).from_config(d.get("config", {}))


def get(identifier, table: dict, kind: str):
    """Resolve a string name, a {'class_name', 'config'} dict, a class instance or None."""
    if identifier is None or not isinstance(identifier, (str, dict)):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier, kind=kind)
    key = identifier.lower()
    if key not in table:
        raise ValueError(f"unknown {kind} {identifier!r}; known: {sorted(table)}")
    return table[key]()
