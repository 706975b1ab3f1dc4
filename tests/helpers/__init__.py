"""The tests' helpers, one module a concern: paths (the checkout and ../shared), commands (running a command
and reading what `dvc repro` ran), projects (a copy of the checkout in a temp dir, its params), models (a
tiny exported model, its images, an engine request), tao (the TAO key, the stand-ins' records, TAO's spec
messages) and collection (which tests build a whole project). Fixtures live in conftest.py."""
