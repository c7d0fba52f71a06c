"""Setuid/setgid bits (docs/security.md): a file keeps them only if config.yaml names it
in the distribution's `setuid:` list. A build drops the others when its output is
captured; the image exporter refuses an image holding one; a pulled build-cache output
holding one is rejected."""
import json
import os
import stat

import pytest
import yaml

from conftest import run_doit
from fixtures import FixtureProject
from tasks.core.errors import UserError
from tasks.model.config import load_config
from tasks.model.component import Component
from tasks.ship import registry
from tasks.ship.image import export_image
from tasks.ship.layer import unpack_layer, verify_output, write_layer

SCRIPT = """mkdir -p $PREFIX/bin $PREFIX/libexec
printf '#!/bin/sh\\necho hi\\n' > $PREFIX/bin/tool
cp $PREFIX/bin/tool $PREFIX/bin/allowed
cp $PREFIX/bin/tool $PREFIX/libexec/helper
chmod 4755 $PREFIX/bin/tool $PREFIX/bin/allowed
chmod 2755 $PREFIX/libexec/helper
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    proj = FixtureProject(tmp_path_factory.mktemp("suid") / "proj")
    proj.add_package("suid", "1.0", {"README": "x\n"}, build="script", script=SCRIPT)
    proj.add_distribution("priv", ["suid"], setuid=["bin/allowed"], image={"name": "test/priv"})
    config = proj.write_config()
    run_doit(config, "build:priv/suid", "assemble:priv", check=True)
    return proj, config


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_build_drops_setuid_bits_not_allowed(built):
    proj, _config = built
    tree = proj.cache / "stage/priv/suid/tree"
    assert mode(tree / "bin/tool") == 0o755
    assert mode(tree / "libexec/helper") == 0o755
    assert mode(tree / "bin/allowed") == 0o4755
    log = (proj.cache / "logs/priv/suid.log").read_text()
    assert "dropped" in log and "bin/tool" in log and "libexec/helper" in log
    entries = {e["path"]: e for e in json.loads(
        (proj.cache / "stage/priv/suid/manifest.json").read_text())["entries"]}
    assert entries["bin/allowed"]["mode"] == 0o4755 and entries["bin/tool"]["mode"] == 0o755


def test_image_ships_an_allowed_setuid_file(built, tmp_path):
    proj, _config = built
    result = export_image(proj.cache / "stage/priv.manifest.json", proj.cache / "stage/priv",
                          tmp_path / "ok.tar", "test/priv", "1.0", setuid=["bin/allowed"])
    assert result["files"] >= 3


def test_image_export_refuses_a_setuid_file_not_allowed(built, tmp_path):
    proj, _config = built
    with pytest.raises(UserError) as info:
        export_image(proj.cache / "stage/priv.manifest.json", proj.cache / "stage/priv",
                     tmp_path / "refused.tar", "test/priv", "1.0", setuid=[])
    text = info.value.render()
    assert "bin/allowed" in text and "distributions.priv.setuid" in text
    assert not (tmp_path / "refused.tar").exists()
    assert list(tmp_path.iterdir()) == [], "a refused export leaves nothing behind"


def test_setuid_list_is_part_of_the_key(built):
    proj, config = built
    data = yaml.safe_load(config.read_text())
    data["distributions"]["priv"]["setuid"] = []
    other = proj.root / "config-nosuid.yaml"
    other.write_text(yaml.safe_dump(data))
    from tasks.build.key import component_key
    assert component_key(Component(load_config_from(config), "priv", "suid")).is_current()
    stamp = component_key(Component(load_config_from(other), "priv", "suid"))
    assert not stamp.is_current() and "setuid changed" in stamp.why()


def test_pulled_output_with_unallowed_setuid_is_rejected(built, tmp_path):
    proj, config = built
    layer = tmp_path / "layer.tar.gz"
    write_layer(proj.cache / "stage/priv/suid", layer, 1700000000)
    unpacked = tmp_path / "unpacked"
    unpack_layer(layer, unpacked)
    digest = __import__("hashlib").sha256((unpacked / "manifest.json").read_bytes()).hexdigest()
    cfg = load_config_from(config)
    comp = Component(cfg, "priv", "suid")
    verify_output(unpacked, comp, digest)            # allowed by this configuration
    cfg.distributions["priv"].setuid = ()
    with pytest.raises(registry.Corrupt, match="setuid"):
        verify_output(unpacked, comp, digest)


def load_config_from(config):
    os.environ["DAPPDEPS_CONFIG"] = str(config)
    try:
        return load_config(config.parent)
    finally:
        del os.environ["DAPPDEPS_CONFIG"]
