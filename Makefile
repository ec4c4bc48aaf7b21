# The two quick-start commands (README): `make demo` and `make test`.
# Both install what they need into the current Python (no venv needed) and are idempotent.
PYTHON ?= python3
export MUJOCO_GL ?= egl

# torch is pinned here, not in pyproject: 2.13.0 is the local CPU wheel on this machine
# (an unpinned torch would pull a multi-GB CUDA build). The editable install maps the import
# root `dpctrl` onto this folder (pyproject.toml: package-dir), nothing else goes on sys.path.
INSTALL = $(PYTHON) -m pip install -q --disable-pip-version-check torch==2.13.0 -e

.PHONY: setup setup-test demo test test-all docs

setup:
	$(INSTALL) .

# Triton only for the fused-kernel tests, in a private directory: it cannot share a process
# with the simulators' software EGL renderer (tests/policy/test_fused.py says why)
setup-test:
	$(INSTALL) ".[test,highway,lerobot,maze,metaworld,ray,onnx,viz]"
	test -d .triton/triton || $(PYTHON) -m pip install -q --disable-pip-version-check --no-deps \
		--target .triton triton==3.7.0 || { rm -rf .triton; exit 1; }

demo: setup
	dpctrl demo

test: setup-test
	$(PYTHON) -m pytest -m "not slow" -q

test-all: setup-test
	$(PYTHON) -m pytest -q

# The docs site (MkDocs + Material + mkdocstrings) into site/; `python -m mkdocs`, not `mkdocs`:
# the script's folder also holds the `dpctrl` console script, which the API pages' loader
# would take for the package.
docs: setup-test
	$(PYTHON) -m mkdocs build --strict
