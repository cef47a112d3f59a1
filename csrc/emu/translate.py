"""Translates convkit's CUDA sources into C++ that runs on the CPU under cuda_emulation.h.

    python csrc/emu/translate.py OUT_DIR csrc/ops/conv2d_cuda.cu csrc/ops/pool2d_cuda.cu

writes OUT_DIR/<stem>.cpp for each source and OUT_DIR/cuda_runtime.h, which stands in for the
toolkit's header. The rewrites:

* the inline-PTX helpers become calls into the emulation (each helper must read exactly as
  recorded in PTX_HELPERS, so a changed helper is re-checked rather than silently replaced);
* ``kernel<<<grid, block, smem, stream>>>(args)`` becomes
  ``emu::launch(kernel, grid, block, smem, stream)(args)``;
* every ``__shared__`` variable is registered (it starts each block as garbage) and every
  ``__launch_bounds__`` is checked at launch;
* the host code's choice of the 32-bit kernels can be overridden (``emu::force_wide_indices``).

Lines keep their numbers and ``#line`` names the .cu file, so compiler and sanitizer messages
point into the real source. Any expected text that is missing, or inline PTX or a launch left
over, raises TranslationError: a kernel change the emulation does not follow stops the test.
"""

import re
import sys
from pathlib import Path


class TranslationError(Exception):
    pass


# name -> (definition as it reads in the .cu file, emulated definition)
PTX_HELPERS = {
    "conv2d_cuda.cu": {
        "smem_u32": (
            """__device__ __forceinline__ unsigned smem_u32(const void* p) {
                 return static_cast<unsigned>(__cvta_generic_to_shared(p));
               }""",
            "",  # only the cp.async helpers use it
        ),
        "cp_async4": (
            """__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
                 asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\\n" ::"r"(smem_u32(dst)),
                              "l"(__cvta_generic_to_global(src)), "r"(valid ? 4 : 0)
                              : "memory");
               }""",
            "__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) "
            "{ emu::cp_async(dst, src, 4, valid ? 4 : 0); }",
        ),
        "cp_async16": (
            """__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
                 asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n" ::"r"(smem_u32(dst)),
                              "l"(__cvta_generic_to_global(src)), "r"(valid ? 16 : 0)
                              : "memory");
               }""",
            "__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) "
            "{ emu::cp_async(dst, src, 16, valid ? 16 : 0); }",
        ),
        "cp_async_commit": (
            """__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\\n" ::: "memory"); }""",
            "__device__ __forceinline__ void cp_async_commit() { emu::cp_async_commit_group(); }",
        ),
        "cp_async_wait": (
            """template <int N>
               __device__ __forceinline__ void cp_async_wait() {
                 asm volatile("cp.async.wait_group %0;\\n" ::"n"(N) : "memory");
               }""",
            "template <int N> __device__ __forceinline__ void cp_async_wait() { emu::cp_async_wait_group(N); }",
        ),
        "tf32": (
            """__device__ __forceinline__ unsigned tf32(float f) {
                 unsigned r;
                 asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(r) : "f"(f));
                 return r;
               }""",
            "__device__ __forceinline__ unsigned tf32(float f) { return emu::cvt_rna_tf32(f); }",
        ),
        "mma_tf32": (
            """__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
                 asm volatile(
                     "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
               }""",
            "__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) "
            "{ emu::mma_m16n8k8_tf32(d, a, b); }",
        ),
    },
    "pool2d_cuda.cu": {},
    "depthwise2d_cuda.cu": {},
    "batch_norm_cuda.cu": {},
}

# Where the host code picks the 32-bit kernels: (pattern, replacement), each matching once.
WIDE_INDEX_HOOKS = {
    "conv2d_cuda.cu": [
        (r"(bool gather_fits\([^)]*\) \{)", r"\1 if (emu::force_wide_indices) return false;"),
        (r"if \(!fits\) \{", "if (!fits || emu::force_wide_indices) {"),
    ],
    "pool2d_cuda.cu": [
        (r"(bool small\(const Pool2dDesc& d\) \{)", r"\1 if (emu::force_wide_indices) return false;"),
    ],
    "depthwise2d_cuda.cu": [
        (r"(bool fits_int\(const Depthwise2dDesc& d\) \{)", r"\1 if (emu::force_wide_indices) return false;"),
    ],
    "batch_norm_cuda.cu": [
        (r"(bool fits_int\(i64 M, i64 C\) \{)", r"\1 if (emu::force_wide_indices) return false;"),
    ],
}

_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/', re.S)


def _blank_comments(code):
    """code with comments replaced by spaces (strings kept), so offsets stay valid."""
    return _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0][0] in "\"'" else re.sub(r"[^\n]", " ", m[0]), code)


def _blank_literals(code):
    """code with string/char literals and comments replaced by spaces, for bracket matching."""
    return _STRING_OR_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), code)


def _normalize(code):
    """Whitespace-free form: adjacent string literals joined, whitespace outside literals dropped."""
    code = re.sub(r'"\s*"', "", _blank_comments(code).strip())
    parts = re.split(r'("(?:\\.|[^"\\])*")', code)
    return "".join(p if i % 2 else re.sub(r"\s+", "", p) for i, p in enumerate(parts))


def _closing(plain, start, open_ch, close_ch):
    """Index just past the bracket matching plain[start] (which is open_ch)."""
    depth = 0
    for i in range(start, len(plain)):
        if plain[i] == open_ch:
            depth += 1
        elif plain[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    raise TranslationError(f"unbalanced {open_ch}{close_ch} from offset {start}")


def _line(code, offset):
    return code.count("\n", 0, offset) + 1


def _keep_lines(old, new):
    """new padded with newlines to span as many lines as old."""
    extra = old.count("\n") - new.count("\n")
    if extra < 0:
        raise TranslationError("a replacement spans more lines than the text it replaces")
    return new + "\n" * extra


def _replace_helpers(code, name, helpers):
    for fn, (expected, emulated) in helpers.items():
        plain = _blank_literals(code)
        found = list(re.finditer(rf"^(?:template\s*<[^<>]*>\s*)?__device__\b[^;{{}}()]*\b{fn}\s*\(", plain, re.M))
        if len(found) != 1:
            raise TranslationError(
                f"{name}: expected one definition of the PTX helper {fn}(), found {len(found)}; "
                "update PTX_HELPERS in csrc/emu/translate.py"
            )
        start = found[0].start()
        params_end = _closing(plain, found[0].end() - 1, "(", ")")
        body = re.compile(r"\s*\{").match(plain, params_end)
        if not body:
            raise TranslationError(f"{name}:{_line(code, start)}: {fn}() has no body")
        end = _closing(plain, body.end() - 1, "{", "}")
        if _normalize(code[start:end]) != _normalize(expected):
            raise TranslationError(
                f"{name}:{_line(code, start)}: the PTX helper {fn}() changed. Check that its emulation in "
                "csrc/emu/cuda_emulation.h still matches, then update PTX_HELPERS in csrc/emu/translate.py. "
                f"Now:\n{code[start:end]}"
            )
        code = code[:start] + _keep_lines(code[start:end], emulated) + code[end:]
    return code


def _check_launch_bounds(code, name):
    out, pos = [], 0
    plain = _blank_literals(code)
    for m in re.finditer(r"\b__launch_bounds__\s*\(", plain):
        bounds_end = _closing(plain, m.end() - 1, "(", ")")
        bounds = code[m.end() : bounds_end - 1].strip()
        params = plain.index("(", bounds_end)
        body = re.compile(r"\s*\{").match(plain, _closing(plain, params, "(", ")"))
        if not body:
            raise TranslationError(f"{name}:{_line(code, m.start())}: no kernel body after __launch_bounds__")
        out += [code[pos : body.end()], f" emu::check_launch_bounds({bounds});"]
        pos = body.end()
    return "".join(out) + code[pos:]


def _register_shared(code, name):
    plain = _blank_literals(code)
    if re.search(r"\bextern\s+__shared__\b", plain):
        raise TranslationError(f"{name}: dynamic (extern) __shared__ memory is not emulated")
    out, pos = [], 0
    for m in re.finditer(r"\b__shared__\b([^;]*);", plain):
        decl = re.sub(r"__align__\s*\([^)]*\)", "", m[1])
        names, depth, current = [], 0, ""
        for ch in decl + ",":
            if ch == "," and depth == 0:
                found = re.search(r"(\w+)\s*(?:\[.*)?$", current.strip(), re.S)
                if not found:
                    raise TranslationError(f"{name}:{_line(code, m.start())}: cannot read the __shared__ declaration")
                names.append(found[1])
                current = ""
                continue
            depth += ch in "[(<"
            depth -= ch in "])>"
            current += ch
        out += [code[pos : m.end()], "".join(f" emu::shared_variable({n});" for n in names)]
        pos = m.end()
    return "".join(out) + code[pos:]


_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:\s*<[^<>;()]*>)?)\s*<<<([^;]*?)>>>\s*\(")


def translate(code, name, path=None):
    """The emulated C++ for the CUDA source `code` whose file name is `name`."""
    if name not in PTX_HELPERS:
        raise TranslationError(f"no translation rules for {name}: add them to csrc/emu/translate.py")
    code = _replace_helpers(code, name, PTX_HELPERS[name])
    for pattern, replacement in WIDE_INDEX_HOOKS[name]:
        code, n = re.subn(pattern, replacement, code)
        if n != 1:
            raise TranslationError(
                f"{name}: expected one match of {pattern!r} (where the host code picks the 32-bit kernels), "
                f"found {n}; update WIDE_INDEX_HOOKS in csrc/emu/translate.py"
            )
    code = _check_launch_bounds(code, name)
    code = _register_shared(code, name)
    code, launches = _LAUNCH.subn(r"emu::launch(\1, \2)(", code)
    plain = _blank_literals(code)
    for pattern, what in [
        (r"<<<", "a kernel launch the translator cannot read"),
        (r"\basm\b", "inline PTX outside the emulated helpers"),
        (r"\b__cvta\w*", "an address-space conversion"),
    ]:
        left = re.search(pattern, plain)
        if left:
            raise TranslationError(f"{name}:{_line(code, left.start())}: {what}")
    if launches == 0:
        raise TranslationError(f"{name}: no kernel launches found")
    where = str(path or name).replace("\\", "/")
    return f'#include "cuda_emulation.h"\n#line 1 "{where}"\n{code}'


RUNTIME_HEADER = '// Stands in for the CUDA toolkit\'s header in the emulated build.\n#include "cuda_emulation.h"\n'


def translate_files(out_dir, sources):
    """Writes out_dir/<stem>.cpp for every source and out_dir/cuda_runtime.h; returns the .cpp paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cuda_runtime.h").write_text(RUNTIME_HEADER)
    written = []
    for src in map(Path, sources):
        target = out_dir / (src.stem + ".cpp")
        target.write_text(translate(src.read_text(), src.name, src.resolve()))
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        for p in translate_files(sys.argv[1], sys.argv[2:]):
            print(p)
    except TranslationError as exc:
        sys.exit(f"translate.py: {exc}")
