"""One source row -> one instruction: column names found or given, chat turns, multiple-choice options,
the instruction text and its content hash; a bad row raises RowError with the reason."""
from __future__ import annotations

import hashlib
import json

from promedical.core.rubric import rubric_problems

PROMPT_NAMES = ("prompt", "instruction", "question", "input", "query", "text")


ID_NAMES = ("id", "_id", "prompt_id", "qid", "question_id", "uid")


SYSTEM_NAMES = ("system", "system_prompt")


ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant",
         "model": "assistant", "chatgpt": "assistant", "system": "system"}


OPTION_SETS = (tuple("ABCDE"), ("opa", "opb", "opc", "opd", "ope"))


class RowError(ValueError):
    """A row that cannot become an instruction; the message is the reason reported."""


# ----------------------------------------------------------------------------------------------
# Shapes: one record -> messages (+ rubric, labels)
# ----------------------------------------------------------------------------------------------
def _col(obj: dict, columns: dict, key: str, guesses: tuple = ()):
    if key in columns:
        return columns[key], obj.get(columns[key])
    for name in guesses or (key,):
        if name in obj and obj[name] is not None:
            return name, obj[name]
    return None, None


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"wrong type: {what} must be text, got {type(value).__name__}")
    return value


def _turns(value, what: str, role_key: str, text_key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(f"wrong type: {what} must be a non-empty list of turns")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RowError(f"wrong type: {what}[{i}] must be an object")
        rk = role_key if role_key in turn else ("role" if "role" in turn else "from")
        tk = text_key if text_key in turn else ("content" if "content" in turn else "value")
        role = turn.get(rk)
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise RowError(f"unknown role {role!r} in {what}[{i}] (expected one of {', '.join(sorted(ROLES))})")
        content = _text(turn.get(tk), f"{what}[{i}].{tk}")
        out.append({"role": ROLES[role.lower()], "content": content})
    return out


def _options_text(obj: dict, columns: dict) -> str | None:
    _, options = _col(obj, columns, "options")
    if isinstance(options, str) and options.strip().startswith(("{", "[")):
        try:
            options = json.loads(options)
        except ValueError:
            raise RowError("wrong type: options is not valid JSON") from None
    items: list[tuple[str, str]] = []
    if isinstance(options, dict):
        items = [(str(k), v) for k, v in options.items()]
    elif isinstance(options, list):
        items = [(chr(ord("A") + i), v) for i, v in enumerate(options)]
    elif options is not None:
        raise RowError(f"wrong type: options must be an object or a list, got {type(options).__name__}")
    else:
        for names in OPTION_SETS:
            if any(n in obj for n in names):
                items = [(chr(ord("A") + i), obj.get(n)) for i, n in enumerate(names) if n in obj]
                break
    items = [(k, v if isinstance(v, str) else str(v)) for k, v in items if v is not None and str(v).strip()]
    if not items:
        return None
    return "\n".join(f"{k}. {v.strip()}" for k, v in items)


def record_to_instruction(obj, columns: dict | None = None) -> dict:
    """One record -> {"messages", "format", "rubric", "category", "specialty", "original_id"}; RowError if bad."""
    columns = columns or {}
    if not isinstance(obj, dict):
        raise RowError(f"wrong type: a row must be an object, got {type(obj).__name__}")
    rubric = None
    fmt = None
    messages: list[dict] | None = None
    if not columns and isinstance(obj.get("prompt"), list) and "rubrics" in obj:  # HealthBench
        from promedical.core import healthbench

        problems = healthbench.record_problems(obj)
        if problems:
            raise RowError(f"HealthBench record: {problems[0][0]}: {problems[0][1]}")
        rubric = healthbench.to_rubric(obj).to_dict()
        messages, fmt = _turns(obj["prompt"], "prompt", "role", "content"), "healthbench"
    elif not columns and "instruction" in obj and "criteria" in obj:  # kit rubric
        problems = rubric_problems(obj)
        if problems:
            raise RowError(f"kit rubric: {problems[0][0]}: {problems[0][1]}")
        rubric, fmt = obj, "kit-rubric"
        ins = obj["instruction"]
        messages = [{"role": "user", "content": ins}] if isinstance(ins, str) else _turns(ins, "instruction", "role", "content")
    else:
        name, value = _col(obj, columns, "messages")
        if value is not None or "messages" in columns:
            messages, fmt = _turns(value, name, "role", "content"), "messages"
        if messages is None:
            name, value = _col(obj, columns, "conversations")
            if value is not None or "conversations" in columns:
                messages, fmt = _turns(value, name, "from", "value"), "sharegpt"
        if messages is None:
            qname, question = _col(obj, columns, "question")
            options = _options_text(obj, columns) if question is not None else None
            if options is not None:
                text = _text(question, qname).strip()
                if not text:
                    raise RowError(f"empty: {qname} has no text")
                messages, fmt = [{"role": "user", "content": f"{text}\n\nOptions:\n{options}"}], "question+options"
        if messages is None:
            name, value = _col(obj, columns, "prompt", PROMPT_NAMES)
            if name is None:
                raise RowError(f"no user text: none of the columns {', '.join(PROMPT_NAMES + ('messages', 'conversations'))} "
                               f"(name one with --columns prompt=NAME)")
            if isinstance(value, list):
                messages, fmt = _turns(value, name, "role", "content"), "messages"
            else:
                text = _text(value, name)
                extra = obj.get(columns.get("input", "input")) if name != columns.get("input", "input") else None
                if isinstance(extra, str) and extra.strip():  # Alpaca: instruction + input
                    text = f"{text.strip()}\n\n{extra.strip()}"
                messages, fmt = [{"role": "user", "content": text}], "prompt"
    sname, system = _col(obj, columns, "system", SYSTEM_NAMES)
    if system is not None and not (messages and messages[0]["role"] == "system"):
        system = _text(system, sname)
        if system.strip():
            messages = [{"role": "system", "content": system}] + messages
    dropped = 0
    while messages and messages[-1]["role"] == "assistant":
        messages, dropped = messages[:-1], dropped + 1
    if not any(m["role"] == "user" for m in messages):
        raise RowError("no user text: no user turn")
    for i, m in enumerate(messages):
        if not m["content"].strip():
            raise RowError(f"empty: turn {i} ({m['role']}) has no text")
        if "\x00" in m["content"] or any("\udc80" <= ch <= "\udcff" for ch in m["content"]):
            raise RowError(f"not valid UTF-8 (undecodable bytes in turn {i})")
    labels = {}
    for key in ("category", "specialty"):
        _, value = _col(obj, columns, key)
        if value is None and rubric is not None:
            value = rubric.get(key)
        labels[key] = value.strip() if isinstance(value, str) and value.strip() else None
    _, original = _col(obj, columns, "id", ID_NAMES)
    if fmt == "healthbench":
        original = obj.get("prompt_id")
    if original is not None and (isinstance(original, bool) or not isinstance(original, (str, int))):
        raise RowError(f"wrong type: id must be text or an integer, got {type(original).__name__}")
    original = str(original).strip() if original is not None and str(original).strip() else None
    return {"messages": messages, "format": fmt, "rubric": rubric, "original_id": original,
            "dropped_turns": dropped, **labels}


def instruction_text(messages: list[dict]) -> str:
    """The text dedup and labels look at: the user turn alone, or every turn as 'role: content'."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def content_hash(messages: list[dict]) -> str:
    return hashlib.sha1(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]
