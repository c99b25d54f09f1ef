"""The one compiled part: the ``.sqz`` rANS loops (src/squeezenet/weights/sqz_codec/_rans.c).

Optional: where no C compiler is found the install goes on and the codec runs in pure NumPy
(``squeezenet.weights.sqz_codec.compiled.AVAILABLE`` says which). Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "squeezenet.weights.sqz_codec._rans",
            ["src/squeezenet/weights/sqz_codec/_rans.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
