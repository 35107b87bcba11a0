"""`strata jobs submit|status|results`: batch questions over many documents, run by the workers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from strata.cli import emit_json
from strata.errors import BadRequest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="batch analyses over many documents (run by `strata worker`)")
    jobs = p.add_subparsers(dest="jobs_command", required=True)

    s = jobs.add_parser("submit", help="ask every document a list of questions, or run a template")
    s.add_argument("sources", nargs="*", metavar="SOURCE", help="local paths; each one is a document")
    s.add_argument("--document", action="append", default=[], metavar="ID", help="a stored document id")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--questions", type=Path, metavar="FILE", help="one question per line")
    how.add_argument("--template", help="overview, security-review or summarise-each")
    s.add_argument("--tenant", default=None,
                   help="whose documents (default: STRATA_LOCAL_TENANT with --document, else none)")
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--citations", type=int, default=5)
    s.add_argument("--budget", type=int, default=None, help="token budget for each document's material")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=submit_command)

    st = jobs.add_parser("status", help="state and progress of a job")
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=status_command)

    r = jobs.add_parser("results", help="the results of a job so far")
    r.add_argument("id")
    r.add_argument("--format", choices=("jsonl", "md"), default="jsonl")
    r.set_defaults(handler=results_command)

    c = jobs.add_parser("cancel", help="cancel a job (results so far are kept)")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cancel_command)


def read_questions(path: Path) -> list[str]:
    """One question per non-empty line; lines starting with # are comments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadRequest(f"cannot read questions from {path}: {exc.strerror}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def submit_command(args: argparse.Namespace) -> int:
    from jobs.service import submit
    from jobs.spec import make_spec
    from strata.settings import get_settings

    questions = read_questions(args.questions) if args.questions else None
    tenant = args.tenant if args.tenant is not None else (get_settings().local_tenant if args.document else "")
    spec = make_spec([str(Path(s).resolve()) for s in args.sources], args.document, questions, args.template,
                     tenant=tenant, max_new_tokens=args.max_new_tokens, max_citations=args.citations,
                     budget=args.budget)
    job_id = submit(spec)
    if args.json:
        emit_json({"id": job_id, "total": spec.total})
    else:
        print(job_id)
    return 0


def status_command(args: argparse.Namespace) -> int:
    from jobs.service import status

    body = status(args.id)
    if args.json:
        emit_json(body)
    else:
        print(f"{body['id']}  {body['state']}  {body['done']}/{body['total']} done, {body['failed']} failed")
    return 0


def results_command(args: argparse.Namespace) -> int:
    from jobs.service import results, results_markdown

    items = results(args.id)
    if args.format == "md":
        sys.stdout.write(results_markdown(items))
    else:
        for item in items:
            sys.stdout.write(json.dumps(item, default=str) + "\n")
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    from jobs.service import cancel

    body = cancel(args.id)
    if args.json:
        emit_json(body)
    else:
        print(f"{body['id']}  {body['state']}  {body['done']}/{body['total']} done")
    return 0
