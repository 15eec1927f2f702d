"""template.yaml: floe's own checks (template_check.py), cfn-lint, and `sam validate --lint`."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from template_check import Tag, check, load, workspace_binaries

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def template():
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def binaries():
    names = workspace_binaries(ROOT)
    assert {"floe-ingest", "floe-ingest-sql", "floe-compactor", "floe-backfill"} <= names
    return names


def test_template_passes_floes_checks(template, binaries):
    assert check(template, binaries) == []


def test_checks_catch_what_the_linters_miss(template, binaries):
    bad = copy.deepcopy(template)
    ingest = bad["Resources"]["IngestFunction"]
    ingest["Properties"]["Environment"] = {"Variables": {"X": Tag("Ref", "NoSuchThing")}}
    ingest["Properties"]["Events"]["Msk"]["Properties"].pop("Topics")
    ingest["Properties"]["Events"]["Msk"]["Properties"]["StartingPosition"] = "EARLIEST"
    ingest["Metadata"]["BuildProperties"]["Binary"] = "floe-ingset"
    bad["Resources"]["CompactorFunction"]["Properties"]["Policies"][0]["Statement"][0]["Resource"] = Tag(
        "Sub", "${Nope.Arn}/x"
    )
    bad["Outputs"]["X"] = {"Value": Tag("GetAtt", "Missing.Arn")}
    sql = bad["Resources"]["IngestSqlFunction"]
    sql["Condition"] = "InVpc"
    sql["Properties"]["Events"]["Msk"]["Properties"]["BatchSize"] = 500
    problems = check(bad, binaries)
    joined = "\n".join(problems)
    for expected in [
        "!Ref NoSuchThing does not resolve",
        "MSK event has no Topics",
        "StartingPosition must be one of",
        "'floe-ingset' is not a workspace binary",
        "!Sub ${Nope.Arn} does not resolve",
        "!GetAtt Missing is not a resource",
        "IngestFunction, IngestSqlFunction: both consume the topics; their Conditions (RawIngest, InVpc) must be "
        "complementary",
        "IngestFunction, IngestSqlFunction: Events differ",
    ]:
        assert expected in joined, joined


def test_state_machine_checks_catch_broken_definitions(template, binaries):
    bad = copy.deepcopy(template)
    machine = bad["Resources"]["BackfillStateMachine"]["Properties"]
    states = machine["Definition"]["States"]
    states["Plan"]["Next"] = "Planned"
    states["Summarize"]["Parameters"]["FunctionName"] = "${CompactorArn}"
    machine["DefinitionSubstitutions"]["ResultsBucket"] = Tag("Ref", "NoBucket")
    inner = states["Splits"]["ItemProcessor"]["States"]
    inner["SplitDone"]["Default"] = "Summarize"  # a state of the outer level
    inner["Load"].pop("Retry")
    states["Orphan"] = {"Type": "Pass", "End": True}
    problems = "\n".join(check(bad, binaries))
    for expected in [
        "States.Plan: Next 'Planned' is not a state of this level",
        "${CompactorArn} is not a DefinitionSubstitution",
        "States.Summarize: FunctionName '${CompactorArn}' is not a function of the template",
        "substitution ResultsBucket names NoBucket, not a resource",
        "ItemProcessor.States.SplitDone: Next 'Summarize' is not a state of this level",
        "ItemProcessor.States.Load: a Lambda task without Retry",
        "States.Orphan: not reachable from StartAt",
    ]:
        assert expected in problems, problems
    # The real definition: a Distributed Map reading the planned splits, looping each split until it is done.
    states = template["Resources"]["BackfillStateMachine"]["Properties"]["Definition"]["States"]
    assert states["Splits"]["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert states["Splits"]["ItemProcessor"]["States"]["SplitDone"]["Choices"][0]["Next"] == "Load"


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("FLOE_TOOLS_BIN", "") + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it into .venv-tools")
    return path


def _env():
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SAM_CLI_TELEMETRY": "0",
    }


def test_cfn_lint(tmp_path):
    proc = subprocess.run([_tool("cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sam_validate_lint(tmp_path):
    proc = subprocess.run(
        [_tool("sam"), "validate", "--lint", "--region", "us-east-1", "-t", str(TEMPLATE)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0 and "is a valid SAM Template" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
