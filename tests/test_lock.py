"""The toolchain is locked: tools/setup_env.sh installs requirements-lock.txt, which pins every
package of the book-and-test environment with hashes (tools/lock.sh writes it with uv from the
top-level pins), and the library's own extras are version ranges that hold the tested versions.

The installed-versions test reads this environment: it fails where the set-up did not install
from the lock (a package missing, at another version, or installed beside it)."""
import importlib.metadata
import re
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements-lock.txt"
CUDA = re.compile(r"^(nvidia-|cuda-|triton$)")  # what torch's CPU build goes without
UNLOCKED = {"pip", "soteria-lib"}  # the installer, and the package itself (-e . --no-deps)


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries() -> list[str]:
    """The lock's entries, each as one string (the pin line and its hash lines)."""
    return re.split(r"\n(?=[^\s#])", LOCK.read_text().split("\n", 2)[2].strip())


def _locked() -> dict[str, str]:
    pins = (re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", entry) for entry in _entries())
    return {_name(pin[1]): pin[2] for pin in pins}


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {_name(Requirement(line).name): str(Requirement(line).specifier)[2:] for line in lines if "==" in line}


def test_the_lock_names_its_command_and_pins_every_package_with_hashes():
    header = LOCK.read_text().splitlines()[:2]
    assert header[1].split() == ["#", "uv", "pip", "compile", "requirements.txt", "requirements-extras.txt",
                                 "--generate-hashes", "--python-version", "3.11", "--python-platform",
                                 "x86_64-manylinux_2_28", "-o", "requirements-lock.txt"]
    entries = _entries()
    assert len(entries) == len(_locked()) > 150  # about 180: the book, its tests and the extras
    for entry in entries:
        assert re.match(r"[A-Za-z0-9_.\-\[\]]+==\S+ \\\n", entry), entry.splitlines()[0]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash for {entry.splitlines()[0]}"


def test_the_lock_holds_every_top_level_pin():
    locked = _locked()
    for path in (ROOT / "requirements.txt", ROOT / "requirements-extras.txt"):
        for name, version in _pins(path).items():
            assert locked.get(name) == version, f"{name}=={version} of {path.name} is not locked: run tools/lock.sh"


def _installed() -> dict[str, str]:
    """What is installed in this environment's site-packages. Not every distribution on sys.path:
    importing Ray puts its vendored copies (ray/thirdparty_files: colorama, ...) on the path, and
    they are Ray's files, not packages the set-up installed."""
    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=folders)}


def test_every_installed_package_is_the_locked_version():
    installed = _installed()
    locked = _locked()
    cpu = installed.get("torch", "").endswith("+cpu")  # SOTERIA_TORCH=cpu: PyTorch's CPU build
    for name, version in locked.items():
        if cpu and CUDA.match(name):
            continue
        want = f"{version}+cpu" if cpu and name in ("torch", "torchvision") else version
        assert installed.get(name) == want, f"{name} is {installed.get(name)}, locked {want}: run tools/setup_env.sh"
    unlocked = sorted(set(installed) - set(locked) - UNLOCKED)
    assert not unlocked, f"installed but not locked: {unlocked}"


def test_the_extras_are_ranges_that_hold_the_locked_versions():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    locked = _locked()
    for extra, requirements in extras.items():
        for requirement in map(Requirement, requirements):
            assert not any(s.operator in ("==", "===") for s in requirement.specifier), f"{extra}: {requirement}"
            assert requirement.specifier.contains(locked[_name(requirement.name)]), f"{extra}: {requirement}"
