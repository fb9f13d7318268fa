"""
Rebuild the conformance corpus from a checkout of istio/istio.

    python3 tests/istio_conformance/build_corpus.py /path/to/istio.git [commit]

Writes ``cases/*.yaml``: Istio's own test inputs for the kinds tsgate reads,
each with a header naming its source file (and document) at the commit and
Istio's verdict:

- ``pkg/config/validation/testdata/crds/<kind>-valid.yaml`` /
  ``-invalid.yaml``: one case per document; "valid" documents are accepted
  by Istio, "invalid" ones are rejected (the ``_err`` key, Istio's expected
  message, is kept in the header and removed from the YAML);
- ``samples/**.yaml`` and the plain (not templated) YAML under ``tests/``
  holding these kinds: one case per file, applied to clusters by Istio's
  own tests, so accepted;
- the table-driven tests of ``pkg/config/validation/validation_test.go`` for
  these kinds (read by ``go_tables.py``; cases it cannot read, and rejected
  cases whose only fault may be in HTTP-only fields, which tsgate does not
  check, are left out and counted);
- ``pkg/config/analysis/analyzers/testdata/*.yaml`` with the messages that
  ``analyzers_test.go`` expects from the analyzers tsgate mirrors: one case
  per test entry, with the expected (code, resource) pairs.

The YAML is Istio's (Apache-2.0, see NOTICE); this script is tsgate's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import go_tables

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
KINDS = ("Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry")
CRDS = ("serviceentry", "workloadentry", "destinationrule")
#: analyzers_test.go message names -> codes, for the analyzers tsgate mirrors
CODES = {
    "ConflictingGateways": "IST0145",
    "ReferencedResourceNotFound": "IST0101",
    "VirtualServiceHostNotFoundInGateway": "IST0132",
    "NoServerCertificateVerificationDestinationLevel": "IST0128",
    "NoServerCertificateVerificationPortLevel": "IST0129",
    "VirtualServiceUnreachableRule": "IST0130",
    "VirtualServiceIneffectiveMatch": "IST0131",
    "ServiceEntryAddressesRequired": "IST0134",
}
#: analyzer -> the codes of it that tsgate checks
ANALYZERS = {
    "gateway.ConflictingGatewayAnalyzer": ("IST0145",),
    "virtualservice.DestinationRuleAnalyzer": ("IST0101",),
    "virtualservice.GatewayAnalyzer": ("IST0101", "IST0132"),
    "destinationrule.CaCertificateAnalyzer": ("IST0128", "IST0129"),
    "serviceentry.ProtocolAddressesAnalyzer": ("IST0134",),
}


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def documents(text: str) -> list[str]:
    parts, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("---"):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    parts.append("".join(cur))
    return [p for p in parts
            if any(x.strip() and not x.lstrip().startswith("#") for x in p.splitlines())]


def write(name: str, header: list[str], body: str) -> None:
    text = "".join(f"# {h}\n" for h in header) + body
    if not text.endswith("\n"):
        text += "\n"
    (CASES / f"{name}.yaml").write_text(text)


#: test inputs that are not accepted by Istio, as the files themselves say
VERDICTS = {"tests/integration/pilot/testdata/some-dir/missing-gateway.yaml": "reject"}
REASONS = {"tests/integration/pilot/testdata/some-dir/missing-gateway.yaml":
           "the file's comment: no http, tcp or tls, a schema validation error"}
#: inputs of istiod's golden-file tests that never pass the Kubernetes API (upper-case
#: object names), so Istio gives them no verdict
NOT_APPLICABLE = {"tests/testdata/networking/ingress-gateway/configs.yaml"}

TLS_SERVER = {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]}
#: test function -> (positional fields, kind, how "in" becomes the spec, verdict field)
TABLES: dict[str, tuple[tuple[str, ...], str, Any, str]] = {
    "TestValidateGateway": (("name", "in", "out", "warning"), "Gateway", lambda x: x, "out"),
    "TestValidateServer": (("name", "in", "out"), "Gateway", lambda x: {"servers": [x]}, "out"),
    "TestValidateTlsOptions": (("name", "in", "out", "warning"), "Gateway",
                               lambda x: {"servers": [dict(TLS_SERVER, tls=x)]}, "out"),
    "TestValidateVirtualService": ((), "VirtualService", lambda x: x, "valid"),
    "TestValidateWorkloadEntry": ((), "WorkloadEntry", lambda x: x, "valid"),
    "TestValidateServiceEntries": ((), "ServiceEntry", lambda x: x, "valid"),
    "TestValidateDestinationRule": ((), "DestinationRule", lambda x: x, "valid"),
    "TestValidateTrafficPolicy": ((), "DestinationRule",
                                  lambda x: {"host": "reviews", "trafficPolicy": x}, "valid"),
    "TestValidateConnectionPool": ((), "DestinationRule", lambda x: {
        "host": "reviews", "trafficPolicy": {"connectionPool": x}}, "valid"),
    "TestValidateLoadBalancer": ((), "DestinationRule", lambda x: {
        "host": "reviews", "trafficPolicy": {"loadBalancer": x}}, "valid"),
    "TestValidateOutlierDetection": ((), "DestinationRule", lambda x: {
        "host": "reviews", "trafficPolicy": {"outlierDetection": x}}, "valid"),
}


#: fields that only matter to HTTP, which tsgate accepts without checking their contents
HTTP_KEYS = {"http", "httpCookie", "httpHeaderName", "httpQueryParameterName"}


def keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in (k, *keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in keys(v)]
    return []


def go_cases(repo: str, commit: str, short: str) -> tuple[int, dict[str, int]]:
    path = "pkg/config/validation/validation_test.go"
    source = git(repo, "show", f"{commit}:{path}")
    written, left_out = 0, {"unreadable": 0, "http-only rejection": 0, "meta labels": 0}
    for func, (fields, kind, wrap, verdict_field) in TABLES.items():
        for n, case in enumerate(go_tables.cases(source, func, fields), 1):
            if isinstance(case, go_tables.Unsupported):
                left_out["unreadable"] += 1
                continue
            if "labels" in case:
                left_out["meta labels"] += 1
                continue
            if verdict_field == "out":
                accept = case.get("out", "") == ""
            else:
                accept = bool(case.get("valid"))
            spec = wrap(case.get("in") or {})
            if not accept and HTTP_KEYS & set(keys(spec)):
                left_out["http-only rejection"] += 1
                continue
            doc = {"apiVersion": "networking.istio.io/v1", "kind": kind,
                   "metadata": {"name": "foo", "namespace": "bar"}, "spec": spec}
            header = [f"source: istio/istio@{short} {path} {func} case {n} "
                      f"({case.get('name', '?')})",
                      f"istio: {'accept' if accept else 'reject'}"]
            if not accept and case.get("out"):
                header.append(f"istio-error: {case['out']}")
            slug = re.sub(r"[^a-z0-9]+", "-", func[len("TestValidate"):].lower())
            write(f"go-{slug}-{n:03d}", header, yaml.safe_dump(doc, sort_keys=False))
            written += 1
    return written, left_out


def main(repo: str, commit: str = "HEAD") -> None:
    commit = git(repo, "rev-parse", commit).strip()
    short = commit[:12]
    CASES.mkdir(exist_ok=True)
    for old in CASES.glob("*.yaml"):
        old.unlink()
    count = 0
    for kind in CRDS:
        for verdict, suffix in (("accept", "valid"), ("reject", "invalid")):
            path = f"pkg/config/validation/testdata/crds/{kind}-{suffix}.yaml"
            for i, doc in enumerate(documents(git(repo, "show", f"{commit}:{path}"))):
                err = [x for x in doc.splitlines() if x.startswith("_err")]
                body = "".join(x for x in doc.splitlines(keepends=True)
                               if not x.startswith("_err"))
                header = [f"source: istio/istio@{short} {path} (document {i + 1})",
                          f"istio: {verdict}"]
                if err:
                    header.append(f"istio-error: {err[0].partition(':')[2].strip()}")
                write(f"crd-{kind}-{suffix}-{i + 1:02d}", header, body)
                count += 1
    listing = git(repo, "ls-tree", "-r", "--name-only", commit, "samples/", "tests/").split()
    for path in listing:
        if not path.endswith((".yaml", ".yml")):
            continue
        text = git(repo, "show", f"{commit}:{path}")
        kinds = "|".join(KINDS)
        if not re.search(rf"^kind: ({kinds})$", text, re.M) or "{{" in text:
            continue  # not these kinds, or a Go template rather than YAML
        if path in NOT_APPLICABLE:
            continue
        prefix = "sample-" if path.startswith("samples/") else "test-"
        name = prefix + re.sub(r"[^a-z0-9]+", "-", path.split("/", 1)[1].lower()).strip("-")
        header = [f"source: istio/istio@{short} {path}", f"istio: {VERDICTS.get(path, 'accept')}"]
        if path in VERDICTS:
            header.append(f"istio-error: {REASONS[path]}")
        write(name, header, text)
        count += 1
    tests = git(repo, "show", f"{commit}:pkg/config/analysis/analyzers/analyzers_test.go")
    for block in re.findall(r"\n\t\{\n(.*?)\n\t\},", tests, re.S):
        analyzer = re.search(r"analyzer:\s*&(\w+\.\w+)\{\}", block)
        schema = "CollectionValidationAnalyzer(collections.VirtualService)" in block
        if (analyzer is None or analyzer.group(1) not in ANALYZERS) and not schema \
                or "meshConfigFile" in block:
            continue
        title = re.search(r'name:\s*"([^"]+)"', block)
        files = re.findall(r'"(testdata/[^"]+\.yaml)"', block)
        expected = re.findall(r"\{msg\.(\w+),\s*\"([^\"]+)\"", block)
        name_of = analyzer.group(1) if analyzer else "schemaValidation(VirtualService)"
        checked = ANALYZERS.get(name_of, ("IST0130", "IST0131"))
        body = "---\n".join(
            git(repo, "show", f"{commit}:pkg/config/analysis/analyzers/{f}").rstrip("\n")
            + "\n" for f in files)
        # The webhook's rule analysis covers http rules too; tsgate checks tcp and tls
        # rules only, so only VirtualServices without http routes are compared.
        layer4 = {f"{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}"
                  for d in yaml.safe_load_all(body) if isinstance(d, dict)
                  and d.get("kind") == "VirtualService" and not d.get("spec", {}).get("http")}
        pairs = sorted({f"{CODES[m]} {who}" for m, who in expected
                        if m in CODES and CODES[m] in checked
                        and (not schema or (who.split(" ", 1)[1] if "/" in who else
                                            "default/" + who.split(" ", 1)[1]) in layer4)})
        name = "analyze-" + re.sub(r"[^a-z0-9]+", "-", (title.group(1) if title else
                                                         files[0]).lower()).strip("-")
        header = [f"source: istio/istio@{short} pkg/config/analysis/analyzers/analyzers_test.go "
                  f"({title.group(1) if title else '?'}) with "
                  + ", ".join(f"pkg/config/analysis/analyzers/{f}" for f in files),
                  f"istioctl-analyzer: {name_of}",
                  "istioctl-codes-checked: " + " ".join(checked)
                  + (" (VirtualServices " + ", ".join(sorted(layer4)) + ")" if schema else ""),
                  "istioctl-expects: " + ("; ".join(pairs) if pairs else "(nothing)")]
        write(name, header, body)
        count += 1
    written, left_out = go_cases(repo, commit, short)
    count += written
    print(f"{count} cases written to {CASES}; left out of the Go tables: {left_out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
