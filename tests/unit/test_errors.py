"""One root: every error the package raises is a ``SidecarError``; the CLI maps each class to its exit code.

A client that catches ``SidecarError`` misses none (a bad profile, a bad
option, a missing binary), and the exit code of an error does not depend on
the order of checks (CONTRACT: exit codes are only ever extended).
"""

import pytest

from inprocess import package_classes
from sidecar_plugin import cli, client, errors
from sidecar_plugin.commands import CliError
from sidecar_plugin.core.options.listen_args import ListenArgsError, parse_listen_argv
from sidecar_plugin.core.options.values import positive_number
from sidecar_plugin.core.profiles.agentroute import ProfileError, parse_profile
from sidecar_plugin.core.profiles.strictload import StrictLoadError
from sidecar_plugin.core.render.ini import IniError
from sidecar_plugin.core.render.terms import RenderError
from sidecar_plugin.names import EXIT_FAIL, EXIT_NO_BINARY, EXIT_USAGE
from sidecar_plugin.shell.files.safefs import UnsafePath
from sidecar_plugin.shell.render.executables import resolve_binary


def test_every_error_of_the_package_is_a_sidecar_error():
    found = [c for c in package_classes() if issubclass(c, BaseException)]
    assert len(found) >= 15, found  # the walk finds them (ProfileError, RenderError, UnsafePath...)
    assert [c.__qualname__ for c in found if not issubclass(c, errors.SidecarError)] == []


@pytest.mark.parametrize("cls", [ProfileError, RenderError, ListenArgsError, IniError, StrictLoadError])
def test_bad_input_is_still_a_value_error(cls):
    assert issubclass(cls, ValueError)
    assert issubclass(cls, errors.SidecarError)


def test_a_bad_profile_and_a_bad_option_are_caught_as_sidecar_errors():
    with pytest.raises(errors.SidecarError):
        parse_profile(b"port: 1\n", "p.yaml")
    with pytest.raises(errors.SidecarError):
        parse_listen_argv(["--program", "p"])
    with pytest.raises(errors.SidecarError):  # and still a ValueError, as argparse's type= expects
        positive_number("nan")


def test_one_class_for_a_missing_binary(tmp_path):
    """render's missing LiteLLM and a client's are the one public class."""
    assert client.BinaryNotFoundError is errors.BinaryNotFoundError
    with pytest.raises(errors.BinaryNotFoundError) as exc:
        resolve_binary(str(tmp_path / "no-litellm"))
    assert type(exc.value) is errors.BinaryNotFoundError
    assert str(exc.value).startswith("no-litellm not found on PATH; install it with")


@pytest.mark.parametrize("exc, code", [
    (errors.BinaryNotFoundError(), EXIT_NO_BINARY),
    (ProfileError("p.yaml: port: bad"), EXIT_USAGE),
    (RenderError("--port: bad"), EXIT_USAGE),
    (CliError("bad", 4), 4),
    (errors.SidecarStartError("not healthy", ["a line"]), EXIT_FAIL),
    (ListenArgsError("--sidecar goes with --root"), EXIT_FAIL),
    (errors.SidecarError("down"), EXIT_FAIL),
    (UnsafePath(40, "is a symlink; refusing to follow or replace it", "/x/state.json"), EXIT_FAIL),
    (OSError(13, "Permission denied", "/x"), EXIT_FAIL),
    (KeyError("boom"), EXIT_FAIL),
])
def test_each_error_class_has_its_exit_code_and_one_line(exc, code, capsys):
    assert cli._report(exc, debug=False) == code
    err = capsys.readouterr().err
    assert err.count("\n") == (3 if isinstance(exc, errors.SidecarStartError) else 1), err  # with the log tail


def test_the_table_does_not_depend_on_its_order():
    """An error of two classes of the table takes its nearest one, whatever order the table is written in."""

    class Both(errors.BinaryNotFoundError, RenderError):
        pass

    assert cli._report(Both(), debug=False) == EXIT_NO_BINARY


def test_debug_raises_only_what_is_not_the_packages(capsys):
    assert cli._report(UnsafePath(40, "is a symlink", "/x"), debug=True) is None  # an OSError: the traceback helps
    assert cli._report(KeyError("boom"), debug=True) is None
    assert cli._report(ProfileError("p.yaml: bad"), debug=True) == EXIT_USAGE


def test_an_unsafe_path_reads_as_the_refused_path(capsys):
    cli._report(UnsafePath(40, "is a symlink; refusing to follow or replace it", "/x/state.json"), debug=False)
    assert capsys.readouterr().err == "sidecar-plugin: is a symlink; refusing to follow or replace it: /x/state.json\n"
