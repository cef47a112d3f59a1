"""Registry of classes that can be rebuilt from their config (layers, models, optimizers, ...)."""

from __future__ import annotations

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}  # class -> the name its configs are saved under (its first registration)


def register_serializable(cls=None, *, name: str | None = None):
    """Class decorator: make ``cls`` loadable by ``load_model`` under ``name`` (default: its class name)."""

    def wrap(c):
        key = name or c.__name__
        _REGISTRY[key] = c
        _NAMES.setdefault(c, key)
        return c

    return wrap(cls) if cls is not None else wrap


def register_keras_serializable(package: str = "Custom", name: str | None = None):
    """Keras's spelling: ``@register_keras_serializable(package='MyPackage')`` registers the class as
    'MyPackage>ClassName' (and loading also finds it under its bare class name)."""
    if not isinstance(package, str) or ">" in package:
        raise ValueError(f"register_keras_serializable: package must be a string without '>', got {package!r}")

    def wrap(c):
        register_serializable(c, name=f"{package}>{name or c.__name__}")
        _REGISTRY.setdefault(name or c.__name__, c)
        return c

    return wrap


def class_name(obj) -> str:
    """The name ``obj``'s config is saved under: its registered name, else its class name."""
    return _NAMES.get(type(obj), type(obj).__name__)


def serialize(obj) -> dict:
    return {"class_name": class_name(obj), "config": obj.get_config()}


def lookup(class_name: str, custom_objects=None, kind: str = "object") -> type:
    bare = class_name.rsplit(">", 1)[-1]
    for key in (class_name, bare):
        if custom_objects and key in custom_objects:
            return custom_objects[key]
    for key in (class_name, bare):
        if key in _REGISTRY:
            return _REGISTRY[key]
    raise ValueError(f"unknown {kind} class {class_name!r}: pass it in custom_objects={{{bare!r}: {bare}}} or "
                     "decorate it with convkit.saving.register_serializable") from None


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
