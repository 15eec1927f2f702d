"""Checks of template.yaml that cfn-lint and `sam validate --lint` do not make: every !Ref / !GetAtt / !Sub / !If
target resolves (also inside AWS::Serverless::* resources and Globals), MSK events name topics and a valid
starting position, functions are built the way floe ships them (provided.al2023, arm64, cargo-lambda, a
binary that exists in the workspace), the ingest builds that IngestBuild chooses between cannot drift apart:
at most one is deployed (complementary conditions) and they carry the same events and policies, and every state
machine's definition hangs together: each StartAt, Next and Default names a state of its own level, every state is
reachable and ends or moves on, every ${placeholder} is a DefinitionSubstitution, and every Lambda task invokes a
function of the template and retries."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

PSEUDO = {
    "AWS::AccountId", "AWS::NoValue", "AWS::NotificationARNs", "AWS::Partition", "AWS::Region",
    "AWS::StackId", "AWS::StackName", "AWS::URLSuffix",
}
STARTING_POSITIONS = {"LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"}


class Tag:
    def __init__(self, name: str, value):
        self.name, self.value = name, value

    def __repr__(self):
        return f"!{self.name} {self.value!r}"


class Loader(yaml.SafeLoader):
    pass


def _construct(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tag(tag_suffix, value)


Loader.add_multi_constructor("!", _construct)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=Loader)


def workspace_binaries(root: Path) -> set[str]:
    names = set()
    for manifest in root.glob("functions/*/Cargo.toml"):
        data = tomllib.loads(manifest.read_text())
        names.update(b["name"] for b in data.get("bin", []))
    return names


def check(template: dict, binaries: set[str]) -> list[str]:
    problems: list[str] = []
    params = template.get("Parameters", {})
    resources = template.get("Resources", {})
    conditions = template.get("Conditions", {})
    known = set(params) | set(resources) | PSEUDO

    def walk(node, where: str, local: frozenset = frozenset()):
        if isinstance(node, Tag):
            v = node.value
            if node.name == "Ref":
                if v not in known | local:
                    problems.append(f"{where}: !Ref {v} does not resolve")
            elif node.name == "GetAtt":
                target = v.split(".")[0] if isinstance(v, str) else v[0]
                if target not in resources:
                    problems.append(f"{where}: !GetAtt {target} is not a resource")
            elif node.name == "Sub":
                text, variables = (v, {}) if isinstance(v, str) else (v[0], v[1])
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    base = name.split(".")[0]
                    if name not in known and base not in resources and name not in variables:
                        problems.append(f"{where}: !Sub ${{{name}}} does not resolve")
                walk(variables, where, local)
            elif node.name == "If":
                if v[0] not in conditions:
                    problems.append(f"{where}: !If condition {v[0]} is not defined")
                walk(v[1:], where, local)
            elif node.name == "Condition":
                if v not in conditions:
                    problems.append(f"{where}: !Condition {v} is not defined")
            else:
                walk(v, where, local)
        elif isinstance(node, dict):
            for k, child in node.items():
                if k == "Condition" and isinstance(child, str) and child not in conditions:
                    problems.append(f"{where}.Condition: {child} is not defined")
                walk(child, f"{where}.{k}", local)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}[{i}]", local)

    for section in ("Globals", "Resources", "Outputs", "Conditions"):
        walk(template.get(section, {}), section)

    globals_fn = template.get("Globals", {}).get("Function", {})

    def param_values(ref) -> set[str] | None:
        if isinstance(ref, Tag) and ref.name == "Ref" and ref.value in params:
            return set(map(str, params[ref.value].get("AllowedValues", []))) or None
        return None

    for name, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties", {})
        runtime = props.get("Runtime", globals_fn.get("Runtime"))
        archs = props.get("Architectures", globals_fn.get("Architectures"))
        if runtime != "provided.al2023":
            problems.append(f"{name}: Runtime must be provided.al2023, is {runtime}")
        if archs != ["arm64"]:
            problems.append(f"{name}: Architectures must be [arm64], is {archs}")
        meta = res.get("Metadata", {})
        if meta.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: Metadata.BuildMethod must be rust-cargolambda")
        binary = meta.get("BuildProperties", {}).get("Binary")
        if binary not in binaries:
            problems.append(f"{name}: BuildProperties.Binary {binary!r} is not a workspace binary {sorted(binaries)}")
        for ev_name, ev in props.get("Events", {}).items():
            if ev.get("Type") != "MSK":
                continue
            p = ev.get("Properties", {})
            where = f"{name}.Events.{ev_name}"
            topics = p.get("Topics")
            if not topics:
                problems.append(f"{where}: MSK event has no Topics")
            elif isinstance(topics, Tag) and topics.name == "Ref":
                if params.get(topics.value, {}).get("Type") != "CommaDelimitedList":
                    problems.append(f"{where}: Topics must reference a CommaDelimitedList parameter")
            start = p.get("StartingPosition")
            allowed = param_values(start) if isinstance(start, Tag) else {start}
            if start is None:
                problems.append(f"{where}: MSK event has no StartingPosition")
            elif allowed is None or not allowed <= STARTING_POSITIONS:
                problems.append(f"{where}: StartingPosition must be one of {sorted(STARTING_POSITIONS)}, can be {allowed}")
            elif "AT_TIMESTAMP" in allowed and "StartingPositionTimestamp" not in p:
                problems.append(f"{where}: AT_TIMESTAMP needs StartingPositionTimestamp")
            batch = p.get("BatchSize")
            if isinstance(batch, int) and not 1 <= batch <= 10000:
                problems.append(f"{where}: BatchSize {batch} is outside 1..10000")
            if isinstance(batch, Tag) and batch.name == "Ref":
                spec = params.get(batch.value, {})
                if not (1 <= int(spec.get("MinValue", 0)) and int(spec.get("MaxValue", 10**9)) <= 10000):
                    problems.append(f"{where}: BatchSize parameter must be bounded to 1..10000")
            if not p.get("Stream"):
                problems.append(f"{where}: MSK event has no Stream (cluster ARN)")
    problems += _alternatives(template)
    problems += _state_machines(template)
    return problems


STATE_TYPES = {"Task", "Choice", "Map", "Parallel", "Pass", "Wait", "Succeed", "Fail"}
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}


def _state_machines(template: dict) -> list[str]:
    resources = template.get("Resources", {})
    problems: list[str] = []
    for name, res in resources.items():
        if res.get("Type") not in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            continue
        props = res.get("Properties", {})
        definition = props.get("Definition")
        if not isinstance(definition, dict):
            problems.append(f"{name}: the definition must be inline (Definition) so that it can be checked")
            continue
        subs = props.get("DefinitionSubstitutions", {})
        targets: dict[str, str | None] = {}
        for key, value in subs.items():
            target = None
            if isinstance(value, Tag) and value.name in ("GetAtt", "Ref"):
                target = value.value.split(".")[0] if isinstance(value.value, str) else value.value[0]
                if target not in resources:
                    problems.append(f"{name}: substitution {key} names {target}, not a resource")
            targets[key] = target

        def placeholders(node, where):
            if isinstance(node, str):
                for used in re.findall(r"\$\{([^}]+)\}", node):
                    if used not in subs:
                        problems.append(f"{where}: ${{{used}}} is not a DefinitionSubstitution")
            elif isinstance(node, dict):
                for k, v in node.items():
                    placeholders(v, f"{where}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    placeholders(v, f"{where}[{i}]")

        placeholders(definition, f"{name}.Definition")
        problems += _check_states(definition, f"{name}.Definition", targets, resources)
    return problems


def _check_states(machine: dict, where: str, targets: dict, resources: dict) -> list[str]:
    """One level of states (a machine, or a Map's ItemProcessor): names resolve within the level, every state is
    reachable from StartAt, and every Lambda task invokes a template function with retries."""
    problems: list[str] = []
    states = machine.get("States", {})
    start = machine.get("StartAt")
    if start not in states:
        problems.append(f"{where}: StartAt {start!r} is not a state")
    edges: dict[str, list[str]] = {}
    for sname, state in states.items():
        at = f"{where}.States.{sname}"
        kind = state.get("Type")
        if kind not in STATE_TYPES:
            problems.append(f"{at}: Type {kind!r} is not a state type")
        nexts = [state["Next"]] if "Next" in state else []
        if kind == "Choice":
            nexts += [c.get("Next") for c in state.get("Choices", [])]
            if "Default" in state:
                nexts.append(state["Default"])
            if not state.get("Choices"):
                problems.append(f"{at}: a Choice without Choices")
        elif kind not in ("Succeed", "Fail") and not nexts and state.get("End") is not True:
            problems.append(f"{at}: neither Next nor End")
        for n in nexts:
            if n not in states:
                problems.append(f"{at}: Next {n!r} is not a state of this level")
        edges[sname] = [n for n in nexts if n in states]
        if kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if not processor:
                problems.append(f"{at}: a Map without ItemProcessor")
            else:
                problems += _check_states(processor, f"{at}.ItemProcessor", targets, resources)
        if kind == "Task" and str(state.get("Resource", "")).startswith("arn:aws:states:::lambda:invoke"):
            function = state.get("Parameters", {}).get("FunctionName", "")
            used = re.fullmatch(r"\$\{([^}]+)\}", str(function))
            target = targets.get(used.group(1)) if used else None
            if target is None or resources.get(target, {}).get("Type") not in FUNCTION_TYPES:
                problems.append(f"{at}: FunctionName {function!r} is not a function of the template")
            if not state.get("Retry"):
                problems.append(f"{at}: a Lambda task without Retry")
    seen, todo = set(), [start]
    while todo:
        s = todo.pop()
        if s in seen or s not in states:
            continue
        seen.add(s)
        todo += edges.get(s, [])
    for unreachable in sorted(set(states) - seen):
        problems.append(f"{where}.States.{unreachable}: not reachable from StartAt")
    return problems


def _alternatives(template: dict) -> list[str]:
    """Functions with an MSK event are alternative builds of ingest: two at most, under complementary
    conditions (only one consumes the topics), with equal events, policies, timeout and log group."""
    resources, conditions = template.get("Resources", {}), template.get("Conditions", {})
    msk = [name for name, res in resources.items()
           if res.get("Type") == "AWS::Serverless::Function"
           and any(e.get("Type") == "MSK" for e in res.get("Properties", {}).get("Events", {}).values())]
    if len(msk) < 2:
        return []
    if len(msk) > 2:
        return [f"{sorted(msk)}: more than two functions consume the topics"]
    (a, b), problems = msk, []
    ca, cb = resources[a].get("Condition"), resources[b].get("Condition")

    def negates(x, y) -> bool:
        c = conditions.get(x)
        return (isinstance(c, Tag) and c.name == "Not" and isinstance(c.value, list) and len(c.value) == 1
                and isinstance(c.value[0], Tag) and c.value[0].name == "Condition" and c.value[0].value == y)

    if not (ca and cb and (negates(ca, cb) or negates(cb, ca))):
        problems.append(f"{a}, {b}: both consume the topics; their Conditions ({ca}, {cb}) must be complementary")
    for key in ("Events", "Policies", "Timeout", "LoggingConfig", "Environment", "MemorySize"):
        va, vb = resources[a]["Properties"].get(key), resources[b]["Properties"].get(key)
        if repr(va) != repr(vb):
            problems.append(f"{a}, {b}: {key} differ ({va!r} vs {vb!r})")
    return problems
