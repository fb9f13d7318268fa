"""The loader: files and directories, documents, line positions, skipped kinds, duplicates."""

from __future__ import annotations

import os
from pathlib import Path

from tests.config.conftest import EXAMPLES
from tsgate.config import load_config
from tsgate.config.loader import expand_paths, load_documents, parse_yaml

GATEWAY = """\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: {name}
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {port}
      name: tcp
      protocol: TCP
    hosts:
    - "*"
"""


def test_positions_of_fields_and_list_items():
    """Every field path maps to the line of its key (or list item), 1-based."""
    docs, diags = parse_yaml(GATEWAY.format(name="g", port=31400), "g.yaml")
    assert diags == []
    [doc] = docs
    assert doc.line == 1
    assert doc.positions["metadata.name"] == 4
    assert doc.positions["spec.servers[0]"] == 9
    assert doc.positions["spec.servers[0].port.number"] == 10
    assert doc.positions["spec.servers[0].hosts[0]"] == 14
    # a path without its own entry falls back to the nearest ancestor
    assert doc.line_of("spec.servers[0].port.nosuch") == 9
    assert doc.line_of("spec.servers[0].hosts[0]") == 14


def test_quoted_keys_in_paths():
    """Keys that are not identifiers are quoted in paths, as in annotations."""
    docs, _ = parse_yaml("metadata:\n  annotations:\n    tsgate.io/x: y\n", "a.yaml")
    assert docs[0].positions['metadata.annotations["tsgate.io/x"]'] == 3


def test_multi_document_files_skip_empty_documents():
    text = ("---\n" + GATEWAY.format(name="a", port=1) + "---\n---\n"
            + GATEWAY.format(name="b", port=2))
    docs, diags = parse_yaml(text, "m.yaml")
    assert diags == []
    assert [d.data["metadata"]["name"] for d in docs] == ["a", "b"]
    assert docs[0].line == 2
    second = len(("---\n" + GATEWAY.format(name="a", port=1) + "---\n---\n").splitlines()) + 1
    assert docs[1].line == second
    assert docs[1].positions["spec.servers[0].port.number"] == docs[1].line + 9


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Gateway\nspec:\n  servers: [\n  - x: 1\n")
    loaded = load_documents([str(bad)])
    [diag] = loaded.diagnostics
    assert diag.severity == "error"
    assert diag.file == str(bad)
    assert diag.line >= 3
    assert "YAML syntax error" in diag.message


def test_documents_before_a_syntax_error_are_kept(tmp_path: Path):
    f = tmp_path / "x.yaml"
    f.write_text(GATEWAY.format(name="a", port=1) + "---\nkey: [unclosed\n")
    loaded = load_documents([str(f)])
    assert [d.data["metadata"]["name"] for d in loaded.documents] == ["a"]
    assert [d.severity for d in loaded.diagnostics] == ["error"]


def test_not_utf8_is_an_error(tmp_path: Path):
    f = tmp_path / "x.yaml"
    f.write_bytes(b"kind: \xff\xfe\n")
    loaded = load_documents([str(f)])
    assert "not UTF-8" in loaded.diagnostics[0].message


def test_duplicate_yaml_key_is_a_warning_and_the_later_value_wins():
    docs, diags = parse_yaml("a: 1\na: 2\n", "d.yaml")
    assert docs[0].data == {"a": 2}
    assert [(d.severity, d.line, d.path) for d in diags] == [("warning", 2, "a")]


def test_directory_sorted_yaml_only_dot_names_skipped_not_recursive(tmp_path: Path):
    for name in ("b.yaml", "a.yml", ".hidden.yaml", "c.txt", "README"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("{}\n")
    files, diags = expand_paths([str(tmp_path)])
    assert files == [str(tmp_path / "a.yml"), str(tmp_path / "b.yaml")]
    assert [(d.severity, d.file) for d in diags] == [("info", str(tmp_path / "sub"))]


def test_symlinks_are_followed(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "gw.yaml").write_text(GATEWAY.format(name="g", port=31400))
    conf = tmp_path / "conf"
    conf.mkdir()
    os.symlink(real / "gw.yaml", conf / "gw.yaml")
    result = load_config([str(conf)])
    assert result.files == (str(conf / "gw.yaml"),)
    assert [r.meta.name for r in result.resources] == ["g"]


def test_configmap_volume_layout_yields_each_file_once(tmp_path: Path):
    """A ConfigMap volume: ..<timestamp>/ holds the files, ..data links to it, names link in."""
    stamp = tmp_path / "..2026_11_25_20_00_00.123456789"
    stamp.mkdir()
    (stamp / "gateway.yaml").write_text(GATEWAY.format(name="g", port=31400))
    (stamp / "vs.yaml").write_text("{}\n")
    os.symlink(stamp.name, tmp_path / "..data")
    os.symlink("..data/gateway.yaml", tmp_path / "gateway.yaml")
    os.symlink("..data/vs.yaml", tmp_path / "vs.yaml")
    files, diags = expand_paths([str(tmp_path)])
    assert files == [str(tmp_path / "gateway.yaml"), str(tmp_path / "vs.yaml")]
    assert diags == []


def test_same_file_given_twice_is_read_once(tmp_path: Path):
    f = tmp_path / "g.yaml"
    f.write_text(GATEWAY.format(name="g", port=31400))
    files, _ = expand_paths([str(f), str(tmp_path), str(f)])
    assert files == [str(f)]


def test_missing_path_and_empty_directory(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    files, diags = expand_paths([str(tmp_path / "nope.yaml"), str(tmp_path / "empty")])
    assert files == []
    assert [(d.severity, d.message) for d in diags] == [
        ("error", "no such file or directory"),
        ("warning", "no *.yaml or *.yml files in directory"),
    ]


def test_other_kinds_are_skipped_with_a_notice_not_an_error():
    """echo.yaml has a Deployment and a Service: two one-line notices, nothing else."""
    result = load_config([str(EXAMPLES / "echo.yaml")])
    assert result.ok
    assert result.resources == ()
    assert [(d.severity, d.line) for d in result.diagnostics] == [("info", 1), ("info", 51)]
    assert "skipped Deployment tcp-echo-deployment (apps/v1)" in result.diagnostics[0].message
    assert "skipped Service tcp-echo-service (v1)" in result.diagnostics[1].message


def test_kubectl_list_items_are_loaded(write):
    body = "\n".join("  " + line for line in GATEWAY.format(name="g", port=1).splitlines())
    path = write("list.yaml", "apiVersion: v1\nkind: List\nitems:\n-" + body[1:] + "\n")
    result = load_config([path])
    assert [r.meta.name for r in result.resources] == ["g"]
    assert result.resources[0].meta.line_of("spec.servers[0].port.number") == 13


def test_duplicate_resource_later_replaces_earlier_with_warning(load):
    """Like kubectl apply: the later document wins, keeping the earlier's place in order."""
    result = load(GATEWAY.format(name="g", port=1), GATEWAY.format(name="other", port=3),
                  GATEWAY.format(name="g", port=2))
    assert [(r.meta.name, r.servers[0].port.number) for r in result.resources] == [
        ("g", 2), ("other", 3)]
    [warning] = [w for w in result.warnings if "defined again" in w.message]
    assert warning.file.endswith("02.yaml") and warning.line == 1
    assert warning.resource == "Gateway default/g"
    assert "replaces the earlier definition at " in warning.message
    assert "00.yaml:1" in warning.message


def test_diagnostics_are_in_file_order(load):
    bad = GATEWAY.format(name="g", port=99999)
    result = load(bad, bad.replace("name: g", "name: h"))
    assert [d.file[-7:] for d in result.errors] == ["00.yaml", "01.yaml"]


def test_the_seed_examples_load(tmp_path: Path):
    result = load_config([str(EXAMPLES), str(EXAMPLES / "sni"), str(EXAMPLES / "local")])
    assert result.ok, [str(d) for d in result.errors]
    kinds = sorted(r.meta.kind for r in result.resources)
    assert kinds == ["Gateway", "Gateway", "ServiceEntry", "ServiceEntry", "ServiceEntry",
                     "VirtualService", "VirtualService", "VirtualService"]
