"""What a job is: documents x questions (or a named analysis template), validated at the edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from strata.errors import BadRequest
from strata.settings import get_settings

MAX_QUESTION_CHARS = 32_000  # strata.ask's limit (importing it here would load torch)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "overview": (
        "What is this material about? Give a short overview.",
        "What are its main parts, and how do they fit together?",
        "Which parts are the most important to read first, and why?",
    ),
    "security-review": (
        "Where does this material handle untrusted input, and how is it validated?",
        "Which secrets, credentials or keys appear, and how are they stored?",
        "Which operations could be abused (injection, path traversal, deserialisation, SSRF)?",
        "What are the three most serious security risks, with the places they occur?",
    ),
    "summarise-each": ("Summarise this document in a few sentences.",),
}


class DocumentRef(BaseModel):
    """One document of a job: a local source path, or a stored document's id."""

    model_config = ConfigDict(frozen=True)

    source: str | None = None
    document_id: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> DocumentRef:
        if (self.source is None) == (self.document_id is None):
            raise ValueError("a document is either a source path or a document id")
        return self

    @property
    def name(self) -> str:
        return self.source if self.source is not None else f"document:{self.document_id}"


class JobSpec(BaseModel):
    """The job payload: every document is asked every question, one document's questions in a row."""

    model_config = ConfigDict(frozen=True)

    documents: list[DocumentRef]
    questions: list[str]
    template: str | None = None
    tenant: str = ""
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    max_citations: int = Field(default=5, ge=0, le=50)
    budget: int | None = Field(default=None, gt=0)

    @property
    def total(self) -> int:
        return len(self.documents) * len(self.questions)


def make_spec(sources: list[str] | None = None, document_ids: list[str] | None = None,
              questions: list[str] | None = None, template: str | None = None, **options: object) -> JobSpec:
    """A checked JobSpec from what a user gave: sources and/or document ids, questions xor a template."""
    if bool(questions) == bool(template):
        raise BadRequest("give either questions or a template, not both and not neither")
    if template is not None:
        if template not in TEMPLATES:
            raise BadRequest(f"unknown template '{template}'; known: {', '.join(sorted(TEMPLATES))}")
        questions = list(TEMPLATES[template])
    try:
        docs = [DocumentRef(source=str(s)) for s in sources or []]
        docs += [DocumentRef(document_id=d) for d in document_ids or []]
        spec = JobSpec(documents=docs, questions=list(questions or []), template=template,
                       **options)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise BadRequest(f"invalid job: {exc.errors()[0]['msg']}") from exc
    check_limits(spec)
    return spec


def check_limits(spec: JobSpec) -> None:
    """Refuse a job over the named limits before anything is queued."""
    settings = get_settings()
    if not spec.documents:
        raise BadRequest("a job needs at least one source or document id")
    if len(spec.documents) > settings.jobs_max_documents:
        raise BadRequest(f"a job may have at most {settings.jobs_max_documents} documents")
    if not spec.questions:
        raise BadRequest("a job needs at least one question")
    if len(spec.questions) > settings.jobs_max_questions:
        raise BadRequest(f"a job may have at most {settings.jobs_max_questions} questions")
    if spec.max_new_tokens > settings.jobs_max_new_tokens:
        raise BadRequest(f"max_new_tokens may be at most {settings.jobs_max_new_tokens}")
    for q in spec.questions:
        if not q.strip():
            raise BadRequest("a question is empty")
        if len(q) > MAX_QUESTION_CHARS:
            raise BadRequest(f"a question is longer than {MAX_QUESTION_CHARS} characters")
