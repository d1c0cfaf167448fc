"""The repository's shape: the agreed top level, complete experiment folders, no cross-imports."""

import subprocess
import sys

import pytest

from shared.paths import EXPERIMENTS_DIR, NOTEBOOKS_DIR, REPO_ROOT
from shared.registry import discover

from .helpers import foreign_imports

TOP_LEVEL = {"experiments", "shared", "kernels", "notebooks", "env", "environment.yml", "tests", "README.md", "pyproject.toml", "Makefile", ".ci"}
EXPERIMENTS = discover()


def test_top_level_is_exactly_the_agreed_layout():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {path.split("/")[0] for path in tracked} - {".gitignore"}
    assert top == TOP_LEVEL


def test_outputs_and_venv_are_ignored():
    ignored = subprocess.run(["git", "check-ignore", "outputs/x", "wandb/x", ".venv/x"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == ["outputs/x", "wandb/x", ".venv/x"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_folder_is_complete(name):
    experiment = EXPERIMENTS[name]
    for required in ("README.md", "reproduce.py", "conf/config.yaml"):
        assert (experiment.path / required).is_file(), f"experiments/{name}/{required} is missing"
    assert "smoke" in experiment.spec.presets
    for preset in experiment.spec.presets:
        assert (experiment.conf_dir / "preset" / f"{preset}.yaml").is_file()
    notebooks = list((NOTEBOOKS_DIR / name).glob("*.ipynb"))
    assert notebooks, f"notebooks/{name}/ has no notebook"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_table_row_has_its_config_and_nothing_else(name):
    experiment = EXPERIMENTS[name]
    declared = {f"{table}_{row}" for table, spec in experiment.spec.tables.items() for row in spec.rows}
    files = {p.stem for p in (experiment.conf_dir / "experiment").glob("*.yaml")}
    assert files == declared


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_no_experiment_imports_another(name):
    root = EXPERIMENTS_DIR / name
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        assert foreign_imports(path.read_text(), name, module) == [], path


def test_foreign_import_check_catches_absolute_and_relative_imports():
    assert foreign_imports("from experiments.other import model", "mine", "experiments.mine.train") == ["experiments.other"]
    assert foreign_imports("import experiments.other.data", "mine", "experiments.mine.train") == ["experiments.other.data"]
    assert foreign_imports("from ..other import data", "mine", "experiments.mine.train") == ["experiments.other"]
    assert foreign_imports("from . import SPEC\nfrom .data import x", "mine", "experiments.mine.train") == []
    assert foreign_imports("from ..data import x", "mine", "experiments.mine.tests.test_a") == []


def test_shared_and_kernels_never_import_experiments():
    for folder in ("shared", "kernels"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            assert foreign_imports(path.read_text(), "", module) == [], path


def _in_fresh_python(code: str, cwd) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd).stdout.strip()


def test_fast_paths_import_no_triton_or_gsplat_until_they_run(tmp_path):
    loaded = _in_fresh_python(
        "import sys, shared.streaming, shared.streaming.hf, kernels.ring_decode\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'triton', 'gsplat'}))",
        cwd=tmp_path,
    )
    assert loaded == "[]"


def test_import_is_light_no_torch_triton_gsplat_or_wandb(tmp_path):
    heavy = _in_fresh_python(
        "import sys, shared, kernels, experiments, shared.cli, shared.registry, shared.config, shared.results\n"
        "shared.registry.discover()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'gsplat', 'wandb'}))",
        cwd=tmp_path,
    )
    assert heavy == "[]"


def test_our_kernels_package_wins_and_transformers_does_not_take_it_for_hf_kernels(tmp_path):
    out = _in_fresh_python(
        "import kernels, shared, experiments\n"
        "from transformers.utils import is_kernels_available\n"
        "print(kernels.__file__); print(shared.__file__); print(experiments.__file__); print(is_kernels_available())",
        cwd=tmp_path,  # not the repo root: resolution must come from the install, not the cwd
    ).splitlines()
    for path, package in zip(out[:3], ("kernels", "shared", "experiments"), strict=True):
        assert path == str(REPO_ROOT / package / "__init__.py")
    assert out[3] == "False"


def _imports(path, package: str) -> set[str]:
    """Modules ``path`` imports, function-level imports included (they hid circles before)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                names |= {module} | ({f"{module}.{a.name}" for a in node.names} if not node.module else set())
            elif node.module:
                names.add(node.module)
    return names


def test_no_module_imports_itself_through_a_circle():
    """stdo's evaluate <-> train circle was hidden by function-level imports; the kernel reference
    built on shared/streaming while shared/streaming imported the kernel."""
    import graphlib

    modules = {}
    for folder in ("shared", "kernels", "experiments"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if "tests" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            modules[name.removesuffix(".__init__")] = (path, package.removesuffix(".__init__"))
    graph = {name: {m for m in _imports(path, package) if m in modules and m != name} for name, (path, package) in modules.items()}
    # a package's __init__ importing its own submodules is how packages work; the cycles that matter are between modules
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and modules[m][0].name == "__init__.py")}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_a_kernels_library_code_imports_nothing_from_shared():
    """kernels/ sits under shared/: a reference is plain torch (benchmarks and AOT tools may use shared/)."""
    tools = {"bench.py", "aot.py", "parity.py"}
    for path in (REPO_ROOT / "kernels").rglob("*.py"):
        if path.name in tools:
            continue
        package = ".".join(path.relative_to(REPO_ROOT).parent.parts)
        assert not {m for m in _imports(path, package) if m.split(".")[0] == "shared"}, path


def test_every_path_a_readme_names_exists():
    """A README that names a moved file (stdo's label_patches in its old home) misleads a reader.
    Paths are taken from `backticks`, from the repository root or the README's folder; a
    `file.py::name` must define name. Placeholders (<clip>/...) and run outputs are not paths."""
    import re

    pattern = re.compile(r"`([A-Za-z_][\w.-]*(?:/[\w.-]+)+/?)(?:::(\w+))?(?:\([^`]*\))?`")  # also `file.py::f(args)`
    missing = []
    for readme in [REPO_ROOT / "README.md", *(p for folder in ("experiments", "kernels", "shared", "env", "notebooks") for p in (REPO_ROOT / folder).rglob("README.md"))]:
        for match in pattern.finditer(readme.read_text()):
            path, name = match.groups()
            if path.startswith(("outputs/", ".venv/", "wandb/", "results/gpu")):
                continue
            found = next((c for c in (REPO_ROOT / path, readme.parent / path) if c.exists()), None)
            if found is None or (name and not re.search(rf"^\s*(def|class) {name}\b", found.read_text(), re.MULTILINE)):
                missing.append(f"{readme.relative_to(REPO_ROOT)}: {match.group(0)}")
    assert not missing, missing


def test_the_readme_names_exactly_the_experiments_with_a_hydra_train_entry():
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    sentence = re.search(r"Hydra `train` entry: (.*?) have one", readme, re.DOTALL).group(1)
    named = set(re.findall(r"`(\w+)`", sentence))
    entries = {p.parent.name for p in EXPERIMENTS_DIR.glob("*/train.py") if "@hydra.main" in p.read_text()}
    assert entries and named == entries, (named, entries)
