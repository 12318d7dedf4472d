"""mkdocs hook: write the reference tables from the code itself, at every build.

Three pages hold hand-written prose and a marker line, `<!-- nnrun:generated -->`:

- reference/config.md      <- `nnrun schema` (the pydantic config's JSON Schema)
- reference/components.md  <- `nnrun components --json` (the registry)
- reference/cli.md         <- the typer app's click command tree (usage, help, options)

In `on_files` the hook replaces each of those pages by a generated one (`File.generated`):
the prose with the tables put in at the marker. Nothing generated is written into the source
tree, and the reference cannot drift from the code. nnrun is imported in-process; none of
these commands imports TensorFlow, so the hook costs about a second.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MARKER = "<!-- nnrun:generated -->"

# Where each kind of component is named in a config (or on the command line).
KIND_USE = {
    "dataset": "`data.dataset`, its parameters under `data.params`",
    "model": "`model.name`, its parameters under `model.params`",
    "loss": "`loss.name`, its parameters under `loss.params`",
    "optimizer": "`optimizer.name`, its parameters under `optimizer.params`",
    "schedule": "`optimizer.schedule.name`, its parameters under `optimizer.schedule.params`",
    "technique": "a key of `train.techniques`, its value the parameters",
    "explainer": "`nnrun explain --method NAME`; parameters as command options",
    "layer": "inside models, and from plugins (`--plugin`)",
}


# -- running nnrun in-process -------------------------------------------------------------------

def on_config(config):
    # Import the nnrun next to mkdocs.yml, not whichever one the environment has installed.
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path[:1]:
        sys.path.insert(0, root)
    return config


def _cli(*args: str) -> str:
    """Stdout of `nnrun ARGS`, run in this process through typer's test runner."""
    from typer.testing import CliRunner

    from nnrun.cli import app

    result = CliRunner().invoke(app, list(args), prog_name="nnrun")
    if result.exit_code != 0:
        raise PluginError(f"`nnrun {' '.join(args)}` exited {result.exit_code}: {result.output.strip()}")
    return result.stdout


def schema() -> dict:
    return json.loads(_cli("schema"))


def components() -> list[dict]:
    return json.loads(_cli("components", "--json"))


# -- markdown helpers ---------------------------------------------------------------------------

_CODE = re.compile(r"(`[^`]*`)")


def text(value: object) -> str:
    """Plain text for a table cell: code spans kept, everything else escaped for Markdown."""
    parts = []
    for piece in _CODE.split(" ".join(str(value).split())):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            parts.append(piece)  # a pipe inside a code span does not split the table cell
        else:
            piece = html.escape(piece, quote=False)
            parts.append(re.sub(r"([\\*_\[\]|])", r"\\\1", piece))
    return "".join(parts)


def code(value: str) -> str:
    value = str(value)
    fence = "``" if "`" in value else "`"
    return f"{fence}{value}{fence}" if value else ""


def literal(value: object) -> str:
    return code(json.dumps(value))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return lines


def component_anchor(kind: str, name: str) -> str:
    """The id of a component's heading on the components page: `model-resnet`, `explainer-gradcam-plus-plus`."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"{kind}-{name}".lower().replace("+", "-plus")).strip("-")


# -- the config reference -----------------------------------------------------------------------

def _ref(prop: dict) -> str | None:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    for option in prop.get("anyOf", []):
        if "$ref" in option:
            return option["$ref"].rsplit("/", 1)[-1]
    return None


def _bounds(prop: dict) -> str:
    marks = [("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<=")]
    return ", ".join(f"{sign} {prop[key]}" for key, sign in marks if key in prop)


def type_of(prop: dict, link=None) -> str:
    """A readable type for one JSON Schema property: `integer > 0`, `memory | file | none`, ..."""
    if "anyOf" in prop:
        return " | ".join(type_of(option, link) for option in prop["anyOf"])
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return link(name) if link else name
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " | ".join(str(v) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items")
        kind = f"list[{type_of(items, link)}]" if items else "list"
    elif kind == "object":
        extra = prop.get("additionalProperties")
        kind = "mapping" if extra in (None, True) or isinstance(extra, dict) else "object"
    elif kind == "null":
        kind = "null"
    bounds = _bounds(prop)
    if bounds:
        kind = f"{kind} {bounds}"
    if "pattern" in prop:
        kind = f"{kind} matching `{prop['pattern']}`"
    return kind


def _default(prop: dict, required: bool) -> str:
    if required:
        return "**required**"
    if "default" in prop:
        return literal(prop["default"])
    return ""


def _field_rows(node: dict, path: str, link, anchors: bool = True) -> list[list[str]]:
    rows = []
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        full = f"{path}.{name}" if path else name
        ref = _ref(prop)
        key = code(full)
        if ref is not None:
            key = f"[{key}](#{full})"
        elif anchors:
            key = f'<span id="{full}"></span>{key}'
        default = _default(prop, name in required)
        if ref is not None and not default:
            default = "its keys' defaults"
        rows.append([key, text(type_of(prop, link)), default,
                     text(prop.get("description", ""))])
    return rows


def _conditionals(node: dict) -> list[tuple[str, str, dict]]:
    """The schema's `allOf: [{if: {properties: {FIELD: {const: VALUE}}}, then: {...}}]` branches."""
    found = []
    for branch in node.get("allOf", []):
        cond = branch.get("if", {}).get("properties", {})
        then = branch.get("then", {}).get("properties", {})
        for field, test in cond.items():
            if "const" in test:
                for target, sub in then.items():
                    found.append((field, str(test["const"]), target, sub))
    return found


def render_config(data: dict) -> str:
    defs = data.get("$defs", {})
    sections: list[tuple[str, dict]] = []
    paths: dict[str, str] = {}

    def collect(path: str, node: dict) -> None:
        sections.append((path, node))
        for name, prop in node.get("properties", {}).items():
            ref = _ref(prop)
            if ref is not None and ref in defs:
                full = f"{path}.{name}" if path else name
                paths.setdefault(ref, full)
                collect(full, defs[ref])

    collect("", data)

    def link(def_name: str) -> str:
        return "mapping"  # the key's cell links to the section below

    out = []
    for path, node in sections:
        if path:
            out += [f"## `{path}` {{ #{path} }}", ""]
        else:
            out += ["## Top level { #top-level }", ""]
        if node.get("description"):
            out += [text(node["description"]), ""]
        out += table(["key", "type", "default", "description"], _field_rows(node, path, link))
        out.append("")
        branches = _conditionals(node)
        if branches:
            field = branches[0][0]
            out += [f"`{path}.{branches[0][2]}` depends on `{path}.{field}`; unknown keys are errors. "
                    "The same parameters, with each component's doc, are on the "
                    "[components page](components.md).", ""]
        for field, value, target, sub in branches:
            title = f"{path}.{target} for {field}: {value}"
            out.append(f'??? note "{title}"')
            out.append("")
            rows = _field_rows(sub, f"{path}.{target}", link, anchors=False)
            if rows:
                out += ["    " + line for line in table(["key", "type", "default", "description"], rows)]
            else:
                out.append("    No parameters.")
            out.append("")
    return "\n".join(out)


# -- the components reference -------------------------------------------------------------------

def render_components(rows: list[dict]) -> str:
    kinds: dict[str, list[dict]] = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row)
    out = ["| kind | components |", "| --- | --- |"]
    for kind, comps in kinds.items():
        names = ", ".join(f"[{code(c['name'])}](#{component_anchor(kind, c['name'])})" for c in comps)
        out.append(f"| [{kind}](#kind-{kind}) | {names} |")
    out.append("")
    for kind, comps in kinds.items():
        out += [f"## {kind} {{ #kind-{kind} }}", ""]
        if kind in KIND_USE:
            out += [f"Named by {KIND_USE[kind]}.", ""]
        for comp in comps:
            out += [f"### `{comp['name']}` {{ #{component_anchor(kind, comp['name'])} }}", "",
                    text(comp.get("doc", "")), ""]
            params = comp.get("params", [])
            if not params:
                out += ["No parameters.", ""]
                continue
            body = [[code(p["name"]), code(p.get("type", "")),
                     "**required**" if p.get("required") else literal(p.get("default")),
                     text(p.get("doc", ""))] for p in params]
            out += table(["parameter", "type", "default", "description"], body)
            out.append("")
    return "\n".join(out)


# -- the CLI reference --------------------------------------------------------------------------

def render_cli() -> str:
    import typer.main

    from nnrun.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="nnrun")
    names = list(group.commands)
    out = table(["command", "what it does"],
                [[f"[`nnrun {n}`](#nnrun-{n})", text(group.commands[n].get_short_help_str(limit=300))]
                 for n in names])
    out.append("")
    out += ["## Global options { #global-options }", "", "```", group.get_usage(ctx).removeprefix("Usage: "),
            "```", ""]
    out += _param_table(group, ctx)
    for name in names:
        command = group.commands[name]
        sub = command.context_class(command, info_name=name, parent=ctx)
        out += [f"## `nnrun {name}` {{ #nnrun-{name} }}", "", "```",
                command.get_usage(sub).removeprefix("Usage: "), "```", ""]
        if command.help:
            out += [text(command.help), ""]
        out += _param_table(command, sub)
    return "\n".join(out)


def _param_table(command, ctx) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        decl, help_text = record
        rows.append([code(decl), param.param_type_name, text(help_text)])
    if not rows:
        return []
    return table(["argument / option", "kind", "description"], rows) + [""]


# -- the hook -----------------------------------------------------------------------------------

PAGES = {
    "reference/config.md": lambda: render_config(schema()),
    "reference/components.md": lambda: render_components(components()),
    "reference/cli.md": render_cli,
}


def on_files(files: Files, config) -> Files:
    for src_uri, render in PAGES.items():
        source = files.get_file_from_path(src_uri)
        if source is None:
            raise PluginError(f"docs/{src_uri} is missing: it holds the prose of a generated page")
        prose = source.content_string
        if prose.count(MARKER) != 1:
            raise PluginError(f"docs/{src_uri} must hold the line {MARKER} exactly once")
        files.remove(source)
        files.append(File.generated(config, src_uri, content=prose.replace(MARKER, render())))
    return files
