"""Hostile and malformed inputs (issue 13, point 2): every value that becomes a path, a
name or a shell word is checked when the project loads, with one short paragraph naming
the file and the field; YAML oddities never give a traceback. Loading never writes:
each case also checks that nothing appeared in the test's folder or outside it."""
import os

import re

import pytest
import yaml

from fixtures import FixtureProject
from tasks.core.errors import UserError
from tasks.model.config import load_config
from tasks.model.project import REPO

SHA = "a" * 64
URL = "http://127.0.0.1:9/never-contacted"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    for var in ("DAPPDEPS_OFFLINE", "DAPPDEPS_JOBS", "DAPPDEPS_BUILDCACHE"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    p = FixtureProject(root, base_url=URL)
    p.outside = tmp_path / "outside"
    p.outside.mkdir()
    (p.outside / "evil.patch").write_text("--- a/x\n+++ b/x\n")
    p.write_recipe(recipe())
    p.add_distribution("base", ["zlib"], version="0.1.0")
    p.write_config()
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(root / "config.yaml"))
    before = sorted(str(x.relative_to(tmp_path)) for x in tmp_path.rglob("*"))
    yield p
    # loading created nothing: no cache/, nothing next to the project or outside it
    assert not (root / "cache").exists()
    assert not any(p.outside.rglob("pwned*"))
    after = sorted(str(x.relative_to(tmp_path)) for x in tmp_path.rglob("*"))
    assert set(after) - set(before) <= set(getattr(p, "written", ())), "loading wrote files"


def recipe(**changes):
    data = {"name": "zlib", "version": "1.3", "description": "compression", "license": "Zlib",
            "sources": [{"file": "zlib-1.3.tar.xz", "sha256": SHA, "urls": [f"{URL}/z.tar.xz"]}]}
    data.update(changes)
    return data


def source(**changes):
    src = {"file": "zlib-1.3.tar.xz", "sha256": SHA, "urls": [f"{URL}/z.tar.xz"]}
    src.update(changes)
    return src


def error(*pieces):
    with pytest.raises(UserError) as info:
        load_config()
    text = info.value.render()
    for piece in pieces:
        assert piece in text, f"{piece!r} not in: {text}"
    assert "\n" not in text.strip() and len(text) < 1200, text
    assert "Traceback" not in text
    return text


def write_text(proj, rel, content):
    path = proj.root / rel
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proj.written = getattr(proj, "written", ()) + (str(path.relative_to(proj.root.parent)),)
    return path


def config(proj, **changes):
    proj.write_config(**changes)


# ---------------------------------------------------------------- YAML oddities

def test_the_real_project_still_loads(monkeypatch):
    monkeypatch.delenv("DAPPDEPS_CONFIG", raising=False)
    for var in ("DAPPDEPS_OFFLINE", "DAPPDEPS_JOBS", "DAPPDEPS_BUILDCACHE"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(REPO)
    assert "toolchain" in cfg.distributions and cfg.recipes["gcc"].sources[1].dest == "gmp"


def test_a_duplicate_key_in_a_recipe_names_key_and_lines(proj):
    write_text(proj, "recipes/zlib.yaml", yaml.safe_dump(recipe()) + "version: '9.9'\n")
    error("recipes/zlib.yaml", "key 'version' is given twice", "line")


def test_a_duplicate_key_in_config_yaml(proj):
    text = (proj.root / "config.yaml").read_text()
    write_text(proj, "config.yaml", text + "jobs: 64\n")
    error("config.yaml", "key 'jobs' is given twice")


def test_a_duplicate_nested_key_in_config_local_yaml(proj):
    write_text(proj, "config.local.yaml", "download:\n  retries: 1\n  retries: 2\n")
    error("config.local.yaml", "key 'retries' is given twice", "lines 2 and 3")


@pytest.mark.parametrize("where", ["recipes/zlib.yaml", "config.yaml"])
def test_a_file_that_is_not_utf8(proj, where):
    write_text(proj, where, b"name: zlib\ndescription: caf\xe9\n")
    error(where, "not UTF-8", "line 2")


def test_deep_nesting_is_refused(proj):
    write_text(proj, "recipes/zlib.yaml", yaml.safe_dump(recipe()) + "smoke: " + "[" * 100 + "]" * 100 + "\n")
    error("recipes/zlib.yaml", "nests deeper than 32 levels")


def test_very_deep_nesting_is_no_traceback(proj):
    write_text(proj, "config.yaml", "a: " + "[" * 200000 + "\n")
    error("config.yaml", "nests deeper")


def test_a_five_megabyte_value_is_refused_briefly(proj):
    write_text(proj, "recipes/zlib.yaml", "name: zlib\ndescription: " + "x" * (5 << 20) + "\n")
    error("recipes/zlib.yaml", "larger than 1024 KiB")


def test_a_long_value_is_cut_short_in_the_message(proj):
    proj.write_recipe(recipe(version="1." + "9" * 500000))
    text = error("recipes/zlib.yaml", "version", "…")
    assert "9" * 100 not in text


def test_a_billion_laughs_is_refused(proj):
    lol = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 9):
        lol += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    write_text(proj, "config.local.yaml", lol)
    error("config.local.yaml", "alias")


@pytest.mark.parametrize("text,expected", [
    ("? [a, b]\n: 1\n", "key that is a list"),
    ("name: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    ("name: zlib\x00\n", "not valid YAML"),
    ("1: x\nname: zlib\n", "unknown key '1'"),
])
def test_yaml_that_is_not_data(proj, text, expected):
    write_text(proj, "recipes/zlib.yaml", text)
    error("recipes/zlib.yaml", expected)


def test_dappdeps_config_must_be_a_regular_file(proj, monkeypatch):
    monkeypatch.setenv("DAPPDEPS_CONFIG", "/dev/zero")
    error("/dev/zero", "not a regular file")
    monkeypatch.setenv("DAPPDEPS_CONFIG", "/tmp/\x1b[31mx.yaml")
    error("DAPPDEPS_CONFIG", "not a file path")


# ---------------------------------------------------------------- recipe fields

SHELL = ["a$(touch pwned).tar.gz", "a`touch pwned`.tar.gz", "a;touch pwned.tar.gz",
         "a b.tar.gz", "a\"b.tar.gz", "a'b.tar.gz", "a\nb.tar.gz"]
TRAVERSAL = ["../outside/pwned.tar.gz", "/etc/passwd", "..", ".", "", "-rf.tar.gz",
             "sub/zlib.tar.gz", ".verified", "x" * 300]


@pytest.mark.parametrize("name", SHELL + TRAVERSAL)
def test_source_file_names_are_plain(proj, name):
    proj.write_recipe(recipe(sources=[source(file=name)]))
    error("recipes/zlib.yaml", "sources[0].file", "plain file name")


@pytest.mark.parametrize("name", ["../../outside/pwned", "a$(id).orig.tar.gz"])
def test_alternative_file_names_are_plain(proj, name):
    proj.write_recipe(recipe(sources=[source(alternatives=[source(file=name)])]))
    error("recipes/zlib.yaml", "sources[0].alternatives[0].file", "plain file name")


@pytest.mark.parametrize("dest", ["../../outside", "/etc", "a/../..", "a//b", "./a", "a/",
                                  "$(touch pwned)", "gmp;id", "a b"])
def test_dest_is_a_relative_normalised_folder(proj, dest):
    proj.write_recipe(recipe(sources=[source(), source(file="gmp.tar.xz", dest=dest)]))
    error("recipes/zlib.yaml", "sources[1].dest", "relative path")


@pytest.mark.parametrize("inner", ["../x.tar.xz", "/etc/passwd", "a/../../b", "$(id).tar"])
def test_inner_is_a_name_or_a_relative_pattern(proj, inner):
    proj.write_recipe(recipe(sources=[source(inner=inner)]))
    error("recipes/zlib.yaml", "sources[0].inner")


def test_inner_patterns_are_allowed(proj):
    proj.write_recipe(recipe(sources=[source(inner="gcc-*.tar.xz")]))
    assert load_config().recipes["zlib"].sources[0].primary.inner == "gcc-*.tar.xz"


def test_patches_outside_recipes_are_refused(proj):
    proj.write_recipe(recipe(patches=["../../outside/evil.patch"]))
    error("recipes/zlib.yaml", "patches[0]")
    proj.write_recipe(recipe(patches=[str(proj.outside / "evil.patch")]))
    error("recipes/zlib.yaml", "patches[0]")


def test_a_patch_symlink_leaving_recipes_is_refused(proj):
    (proj.root / "recipes" / "patches").mkdir()
    os.symlink(proj.outside / "evil.patch", proj.root / "recipes" / "patches" / "fix.patch")
    proj.written = (str((proj.root / "recipes" / "patches").relative_to(proj.root.parent)),
                    str((proj.root / "recipes" / "patches" / "fix.patch").relative_to(proj.root.parent)))
    proj.write_recipe(recipe(patches=["patches/fix.patch"]))
    error("recipes/zlib.yaml", "patches[0]", "outside")


@pytest.mark.parametrize("name", ["p$(touch pwned).patch", "p;id.patch", "a b.patch"])
def test_patch_names_are_plain(proj, name):
    proj.write_recipe(recipe(patches=[f"patches/{name}"]))
    error("recipes/zlib.yaml", "patches[0]")


@pytest.mark.parametrize("version", ["../../../outside", "1.0/x", "1.0;id", "$(id)", "-1", "1 0", ""])
def test_recipe_versions_are_strict(proj, version):
    proj.write_recipe(recipe(version=version))
    error("recipes/zlib.yaml", "version")


def test_recipe_file_names_are_recipe_names(proj):
    write_text(proj, "recipes/Zlib$(id).yaml", yaml.safe_dump(dict(recipe(), name=None)).replace("name: null\n", ""))
    error("Zlib$(id).yaml", "name", "not a valid name")


@pytest.mark.parametrize("key", ["PATH", "PREFIX", "SRCDIR", "HOME", "PREFIX_TOOLCHAIN", "LD_PRELOAD",
                                 "BASH_ENV", "IFS", "DAPPDEPS_CONFIG", "A B", "A;id", "1A",
                                 "$(id)", "A=B"])
def test_environment_keys_are_identifiers_the_framework_does_not_own(proj, key):
    proj.write_recipe(recipe(environment={key: "x"}))
    error("recipes/zlib.yaml", "environment.")


def test_environment_keys_of_the_real_recipes_are_fine(proj):
    proj.write_recipe(recipe(environment={"CC": "gcc", "LFS_TGT": "x86_64-lfs-linux-gnu",
                                          "CFLAGS_FOR_TARGET": "-O2", "PKG_CONFIG_PATH": "$PREFIX"}))
    assert load_config().recipes["zlib"]["environment"]["CC"] == "gcc"


@pytest.mark.parametrize("spec", ["debian:../x", "debian:-oDir=/tmp", "debian:zlib;id", "debian:Zlib",
                                  "debian:"])
def test_debian_specs_are_package_names(proj, spec):
    proj.write_recipe(recipe(sources=[source(urls=[spec])]))
    error("recipes/zlib.yaml", "sources[0].urls[0]")


@pytest.mark.parametrize("url", ["https://x/a b.tar.gz", "http://x/a\tb", "ftp://x/a"])
def test_urls_have_no_spaces(proj, url):
    proj.write_recipe(recipe(sources=[source(urls=[url])]))
    error("recipes/zlib.yaml", "sources[0].urls[0]")


@pytest.mark.parametrize("path", ["../../../etc/shadow", "/etc/shadow"])
def test_license_files_stay_in_the_source_tree(proj, path):
    proj.write_recipe(recipe(license_files=[path]))
    error("recipes/zlib.yaml", "license_files[0]")


def test_inherit_must_be_a_name(proj):
    proj.write_recipe(recipe(inherit=["a", "b"]))
    error("recipes/zlib.yaml", "inherit")


# ---------------------------------------------------------------- config fields

@pytest.mark.parametrize("folder", ["/", "/etc", "/usr/local/cache", "/tmp", "/var", "/home",
                                    "../../../../../../../..", "/proc/self", "/var/tmp"])
def test_cache_dir_is_not_a_system_folder(proj, folder):
    config(proj, cache_dir=folder)
    error("config.yaml", "cache_dir", "system folder")


def test_cache_dir_through_a_link_to_a_system_folder(proj):
    os.symlink("/", proj.root / "cache-link")
    proj.written = (str((proj.root / "cache-link").relative_to(proj.root.parent)),)
    config(proj, cache_dir="cache-link")
    error("config.yaml", "cache_dir", "'/'")


def test_cache_dir_below_tmp_or_beside_the_config_is_fine(proj, tmp_path):
    config(proj, cache_dir=str(tmp_path / "elsewhere" / "cache"))
    assert load_config().cache == tmp_path / "elsewhere" / "cache"
    config(proj, cache_dir="../cache-beside")
    assert load_config().cache == proj.root.parent / "cache-beside"


@pytest.mark.parametrize("root", ["/", "/usr", "/etc/deps", "/.dapp/../etc", "/.dapp/deps/", "deps",
                                  "/.dapp//deps", "/a:b", "/a b", "/tmp", "/$(id)"])
def test_prefix_root_is_absolute_normalised_and_not_the_system(proj, root):
    config(proj, prefix_root=root)
    error("config.yaml", "prefix_root")


@pytest.mark.parametrize("version", ["../../etc", "0.1/x", "0.1+build", "0.1~rc", "$(id)", "-1", "1 0"])
def test_distribution_versions_are_paths_and_tags(proj, version):
    proj.add_distribution("base", ["zlib"], version=version)
    config(proj)
    error("config.yaml", "distributions.base.version")


@pytest.mark.parametrize("name", ["../evil", "Base", "a/b", "a b", "$(id)"])
def test_distribution_names_are_strict(proj, name):
    proj.distributions = {name: {"version": "1", "components": ["zlib"]}}
    config(proj)
    error("config.yaml", "distributions.")


@pytest.mark.parametrize("images", [{"../evil": {}}, {"Runtime": {}}, {"rt": {"name": "Evil/../x"}},
                                    {"rt+x": {}}])
def test_image_names_are_strict(proj, images):
    proj.add_distribution("base", ["zlib"], version="1", images=images)
    config(proj)
    error("config.yaml", "distributions.base.images")


@pytest.mark.parametrize("mirror", ["debian:zlib", "ftp://x", "file:///srv/a b"])
def test_mirrors_are_url_prefixes(proj, mirror):
    config(proj, mirrors=[mirror])
    error("config.yaml", "mirrors[0]")


def test_credential_variable_names_are_identifiers(proj):
    config(proj, buildcache={"url": "http://127.0.0.1:5000", "password_env": "X;cat /etc/shadow"})
    error("config.yaml", "buildcache.password_env")


# ---------------------------------------------------------------- DAPPDEPS_* variables

@pytest.mark.parametrize("var,value", [
    ("DAPPDEPS_JOBS", "0"), ("DAPPDEPS_JOBS", "1_000"), ("DAPPDEPS_JOBS", "\u0663"),
    ("DAPPDEPS_JOBS", "two"), ("DAPPDEPS_JOBS", "99999"), ("DAPPDEPS_OFFLINE", "maybe"),
    ("DAPPDEPS_BUILDCACHE", "sideways"), ("DAPPDEPS_BUILDCACHE", "x" * 10000)])
def test_dappdeps_variables_are_checked_and_named(proj, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    error(var)


def test_dappdeps_variables_that_are_fine(proj, monkeypatch):
    monkeypatch.setenv("DAPPDEPS_JOBS", "3")
    monkeypatch.setenv("DAPPDEPS_OFFLINE", "yes")
    monkeypatch.setenv("DAPPDEPS_BUILDCACHE", "read-only")
    cfg = load_config()
    assert cfg.jobs == 3 and cfg.download["offline"] is True


# ---------------------------------------------------------------- the rendered script

def test_no_loaded_name_can_run_code_in_the_build_script(proj):
    """What reaches build.sh as text (file names, dest, patch names) is from the plain
    charset; the script the lead renders from them holds no substitution from them."""
    from tasks.model.component import Component
    (proj.root / "recipes" / "patches").mkdir()
    (proj.root / "recipes" / "patches" / "fix-1.patch").write_text("")
    proj.written = tuple(str(p.relative_to(proj.root.parent)) for p in
                         (proj.root / "recipes" / "patches", proj.root / "recipes" / "patches" / "fix-1.patch"))
    proj.write_recipe(recipe(sources=[source(fixup="true"), source(file="gmp+x~1_2.tar.xz", dest="gmp/sub",
                                                                   fixup="true")],
                             patches=["patches/fix-1.patch"]))
    from tasks.build.key import obtained
    cfg = load_config()
    comp = Component(cfg, "base", "zlib")
    script = comp.script(obtained(comp))
    for word in ("gmp/sub", "fix-1.patch"):
        assert word in script
    assert "`" not in script and "$(" not in script


# ---------------------------------------------------------------- privileges, limits, URLs

@pytest.mark.parametrize("url", ["http://ci:s3cret@127.0.0.1:5000", "https://tok@reg.example"])
def test_registry_urls_with_credentials_are_refused(proj, url):
    config(proj, buildcache={"url": url})
    text = error("config.yaml", "buildcache.url", "credentials")
    assert "s3cret" not in text


@pytest.mark.parametrize("path", ["/bin/sudo", "../bin/sudo", "bin/../../x", ""])
def test_setuid_paths_are_prefix_relative(proj, path):
    proj.add_distribution("base", ["zlib"], version="0.1.0", setuid=[path])
    config(proj)
    error("config.yaml", "distributions.base.setuid")


@pytest.mark.parametrize("value", [0, -5, 10**9, "ten"])
def test_time_limits_are_sane(proj, value):
    proj.write_recipe(recipe(timeout=value))
    error("zlib.yaml", "timeout")
