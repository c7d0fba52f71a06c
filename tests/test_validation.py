"""Config and recipe validation: each mistake gives one paragraph naming file and field."""

import pytest
import yaml

from conftest import run_doit
from tasks.model.config import load_config
from tasks.core.errors import UserError

SHA = "a" * 64
GOOD_RECIPE = {"name": "zlib", "version": "1.3", "description": "compression library",
               "license": "Zlib", "sources": [{"file": "zlib-1.3.tar.xz", "sha256": SHA,
                                               "urls": ["https://example.invalid/zlib-1.3.tar.xz"]}]}
GOOD_CONFIG = {"distributions": {"base": {"version": "0.1.0", "components": ["zlib"]}}}


def write(tmp_path, config=None, recipes=None, raw_recipe=None):
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config or GOOD_CONFIG))
    for data in recipes or [GOOD_RECIPE]:
        (tmp_path / "recipes" / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    if raw_recipe:
        name, text = raw_recipe
        (tmp_path / "recipes" / f"{name}.yaml").write_text(text)
    return tmp_path / "config.yaml"


def error_of(monkeypatch, config):
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(config))
    with pytest.raises(UserError) as info:
        load_config()
    return info.value.render()


def recipe(**changes):
    data = dict(GOOD_RECIPE, **changes)
    return [{k: v for k, v in data.items() if v is not None}]


CASES = {
    "unknown config key": (dict(GOOD_CONFIG, prefix_rot="/x"), None,
                           ["config.yaml", "prefix_rot", "unknown key", "prefix_root"]),
    "version as number": ({"distributions": {"base": {"version": 0.1, "components": ["zlib"]}}}, None,
                          ["distributions.base.version", "must be text"]),
    "relative prefix root": (dict(GOOD_CONFIG, prefix_root="deps"), None, ["prefix_root", "absolute"]),
    "missing component recipe": ({"distributions": {"base": {"version": "1", "components": ["zlib", "nope"]}}},
                                 None, ["components[1]", "recipes/nope.yaml"]),
    "unknown used distribution": ({"distributions": {"base": {"version": "1", "components": ["zlib"],
                                                              "uses": ["toolchain"]}}}, None,
                                  ["distributions.base.uses", "toolchain"]),
    "distribution cycle": ({"distributions": {"a": {"version": "1", "components": ["zlib"], "uses": ["b"]},
                                              "b": {"version": "1", "components": [], "uses": ["a"]}}}, None,
                           ["cycle", "a -> b -> a"]),
    "malformed sha256": (None, recipe(sources=[{"file": "z.tar.xz", "sha256": "abc", "urls": ["https://x/z"]}]),
                         ["recipes/zlib.yaml", "sources[0].sha256", "64"]),
    "missing sha256": (None, recipe(sources=[{"file": "z.tar.xz", "urls": ["https://x/z"]}]),
                       ["sources[0].sha256", "missing"]),
    "unknown recipe key": (None, recipe(confgure=["--x"]), ["recipes/zlib.yaml", "confgure", "unknown key"]),
    "wrong type": (None, recipe(depends="zlib-dev"), ["depends", "expected a list"]),
    "bad location": (None, recipe(sources=[{"file": "z", "sha256": SHA, "urls": ["ftp://x/z"]}]),
                     ["sources[0].urls[0]", "debian:"]),
    "unknown dependency": (None, recipe(depends=["libfoo"]), ["recipes/zlib.yaml", "depends[0]", "libfoo"]),
    "missing field": (None, recipe(license=None), ["recipes/zlib.yaml", "license", "missing"]),
    "bad build system": (None, recipe(build="cmake"), ["build", "autotools"]),
    "replaces without depends": (None, recipe(replaces=["x"]), ["replaces[0]", "depends"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_input_names_file_and_field(case, tmp_path, monkeypatch):
    config, recipes, expected = CASES[case]
    text = error_of(monkeypatch, write(tmp_path, config, recipes))
    for piece in expected:
        assert piece in text, f"{piece!r} not in: {text}"
    assert "\n" not in text.strip()


def test_dependency_cycle_is_printed(tmp_path, monkeypatch):
    a = dict(GOOD_RECIPE, name="a", depends=["b"])
    b = dict(GOOD_RECIPE, name="b", depends=["c"])
    c = dict(GOOD_RECIPE, name="c", depends=["a"])
    config = {"distributions": {"base": {"version": "1", "components": ["a", "b", "c"]}}}
    text = error_of(monkeypatch, write(tmp_path, config, [a, b, c]))
    assert "a -> b -> c -> a" in text


def test_duplicate_component_and_name_mismatch(tmp_path, monkeypatch):
    config = {"distributions": {"base": {"version": "1", "components": ["zlib", "zlib"]}}}
    assert "listed twice" in error_of(monkeypatch, write(tmp_path, config))
    other = tmp_path / "other"
    other.mkdir()
    bad = dict(GOOD_RECIPE, name="zlib2")
    text = error_of(monkeypatch, write(other, None, None, ("zlib", yaml.safe_dump(bad))))
    assert "zlib2" in text and "file" in text


def test_same_file_with_two_checksums(tmp_path, monkeypatch):
    b = dict(GOOD_RECIPE, name="zlib-static", sources=[dict(GOOD_RECIPE["sources"][0], sha256="b" * 64)])
    config = {"distributions": {"base": {"version": "1", "components": ["zlib", "zlib-static"]}}}
    text = error_of(monkeypatch, write(tmp_path, config, [GOOD_RECIPE, b]))
    assert "zlib-1.3.tar.xz" in text and "a" * 64 in text and "b" * 64 in text


def test_yaml_syntax_error_gives_line(tmp_path, monkeypatch):
    text = error_of(monkeypatch, write(tmp_path, None, None, ("zlib", "name: zlib\nsources: [\n")))
    assert "recipes/zlib.yaml" in text and "not valid YAML" in text and "line" in text


def test_local_override_and_environment(tmp_path, monkeypatch):
    config = write(tmp_path)
    (tmp_path / "config.local.yaml").write_text("jobs: 7\ndownload:\n  retries: 9\n")
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(config))
    cfg = load_config()
    assert cfg.jobs == 7 and cfg.download["retries"] == 9 and cfg.download["read_timeout"] == 60.0
    monkeypatch.setenv("DAPPDEPS_OFFLINE", "1")
    monkeypatch.setenv("DAPPDEPS_JOBS", "3")
    cfg = load_config()
    assert cfg.download["offline"] is True and cfg.jobs == 3
    (tmp_path / "config.local.yaml").write_text("jobs: many\n")
    text = error_of(monkeypatch, config)
    assert "config.local.yaml" in text and "jobs" in text


def test_inherit_takes_parent_fields(tmp_path, monkeypatch):
    child = {"name": "zlib-pass2", "inherit": "zlib", "configure": ["--static"]}
    config = {"distributions": {"base": {"version": "1", "components": ["zlib-pass2"]}}}
    write(tmp_path, config, [GOOD_RECIPE], ("zlib-pass2", yaml.safe_dump(child)))
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(tmp_path / "config.yaml"))
    r = load_config().recipes["zlib-pass2"]
    assert r.version == "1.3" and r["configure"] == ["--static"] and r.sources[0].id == "zlib-1.3.tar.xz"


def test_doit_exits_2_without_traceback(tmp_path):
    config = write(tmp_path, dict(GOOD_CONFIG, jobs="two"))
    run = run_doit(config, "list")
    assert run.returncode == 2
    assert "Traceback" not in run.text
    assert "field 'jobs'" in run.err and "whole number" in run.err


def test_runtime_image_must_be_one_of_the_distributions_images(tmp_path, monkeypatch):
    config = {"distributions": {"base": {"version": "0.1.0", "components": ["zlib"],
                                         "runtime_image": "base-runtime"}}}
    text = error_of(monkeypatch, write(tmp_path, config))
    assert "distributions.base.runtime_image" in text and "'base-runtime'" in text
    config["distributions"]["base"]["images"] = {"base-runtime": {"include": ["lib"]}}
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(write(tmp_path, config)))
    assert load_config().distributions["base"].runtime_image == "base-runtime"


def test_checks_images_must_be_a_list_of_text(tmp_path, monkeypatch):
    config = dict(GOOD_CONFIG, checks={"images": "busybox"})
    assert "checks" in error_of(monkeypatch, write(tmp_path, config))
