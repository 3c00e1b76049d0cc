"""The hardening classes of issue 14, tested as classes (hypothesis over generated inputs), not only
as the examples that found them: strict JSON, ids and escaped reports, duplicates that would change a
score, finite outputs, exact HealthBench round trips, safe output files, credentials on redirects."""
import json
import math
import os
import socket
import stat
import threading
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import make_rubric
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from promedical.app import cli
from promedical.core import healthbench
from promedical.core.files import OutputError, append_jsonl, atomic_write_text, write_json, write_jsonl
from promedical.core.ids import ID_PATTERN, escape, id_problem
from promedical.core.jsonl import MAX_LINE_BYTES, loads
from promedical.core.rubric import Problem, Rubric, rubric_problems
from promedical.core.rubric_files import file_problems, read_rubrics
from promedical.core.scoring import RewardConfig, Scores, grpo_reward

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])
UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=12)
ids = st.from_regex(ID_PATTERN, fullmatch=True)


# ---------------------------------------------------------------------------------------------- strict JSON
@SETTINGS
@given(value=json_values)
def test_strict_json_reads_back_every_valid_document(value):
    assert loads(json.dumps(value)) == value


@SETTINGS
@given(obj=st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=4), repeat=json_values,
       depth=st.integers(0, 4), pick=st.integers(0, 3))
def test_a_repeated_key_at_any_depth_is_an_error(obj, repeat, depth, pick):
    key = list(obj)[pick % len(obj)]
    text = json.dumps(obj)[:-1] + ", " + json.dumps(key) + ": " + json.dumps(repeat) + "}"
    for _ in range(depth):
        text = '{"x": [1, ' + text + "]}"
    with pytest.raises(ValueError, match="duplicate key"):
        loads(text)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 309])
def test_non_finite_numbers_are_malformed(number):
    with pytest.raises(ValueError):
        loads('{"weight": %s}' % number)


def test_duplicate_key_reported_with_file_and_line(write_lines):
    good = json.dumps(make_rubric("a"))
    forged = json.dumps(make_rubric("b")).replace('"tier": "veto"', '"tier": "veto", "tier": "bonus"')
    path = write_lines([good, forged])
    assert [str(p) for p in file_problems(path)] == [f"{path}:2: <line>: malformed JSON: duplicate key 'tier' in one object"]


# ---------------------------------------------------------------------------------------------- ids, escaping
@SETTINGS
@given(text=st.text())
def test_escape_gives_one_printable_line_and_is_idempotent(text):
    out = escape(text)
    assert all(unicodedata.category(ch) not in UNSAFE for ch in out)
    assert "\n" not in out and "\r" not in out and escape(out) == out


@SETTINGS
@given(value=st.text(max_size=140))
def test_an_id_is_printable_ascii_without_spaces_or_invisible_characters(value):
    if id_problem(value) is None:
        assert value.isascii() and value.isprintable() and " " not in value and 1 <= len(value) <= 128
    if any(unicodedata.category(ch) in UNSAFE | {"Zs"} for ch in value):
        assert id_problem(value) is not None


@SETTINGS
@given(rid=st.text(min_size=1, max_size=20), cid=st.text(min_size=1, max_size=20))
def test_a_validation_report_has_exactly_one_line_per_problem(rid, cid, tmp_path_factory):
    rec = make_rubric(rid)
    rec["criteria"][3]["id"] = cid
    path = tmp_path_factory.mktemp("ids") / "r.jsonl"
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    problems = file_problems(path)
    report = "\n".join(str(p) for p in problems)
    assert len(report.splitlines()) == len(problems) if problems else report == ""
    assert bool(problems) == (id_problem(rid) is not None or id_problem(cid) is not None or cid in {"p1", "p2", "p3", "v1"})


@SETTINGS
@given(file=st.text(), path=st.text(), message=st.text())
def test_a_problem_prints_as_one_line_whatever_it_holds(file, path, message):
    assert len(str(Problem(file, 1, path, message)).splitlines()) == 1


# ---------------------------------------------------------------------------------------------- duplicates
def _run(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("second", [{"p1": True}, {"p1": False, "p2": False, "p3": False, "b1": False, "v1": True}])
def test_a_response_graded_twice_is_refused_whatever_the_second_grade(second, write_lines, capsys):
    rubrics = write_lines([make_rubric("a")], "r.jsonl")
    first = {"prompt_id": "a", "response_id": "x", "criteria_met": {"p1": True, "p2": True, "p3": True, "b1": True, "v1": False}}
    grades = write_lines([first, {"prompt_id": "a", "response_id": "y", "criteria_met": first["criteria_met"]},
                          dict(first, criteria_met=second)], "g.jsonl")
    code, out, err = _run(["score", rubrics, grades], capsys)
    assert code == 1 and out == "" and err.splitlines() == [
        f"{grades}:3: response_id: duplicate grades for response 'x' of 'a' (first on line 1)"]


# ---------------------------------------------------------------------------------------------- finite outputs
@SETTINGS
@given(alpha=st.floats(), headroom=st.floats(), lam=st.floats(), s1=st.floats(0, 1), s2=st.integers(0, 10**6),
       s3=st.integers(0, 10**6))
def test_every_accepted_reward_config_gives_a_finite_reward(alpha, headroom, lam, s1, s2, s3):
    try:
        config = RewardConfig(alpha=alpha, headroom=headroom, lam=lam)
    except ValueError:
        return
    reward = grpo_reward(Scores(s1, s2, s3), config)
    assert math.isfinite(reward)
    json.dumps(reward, allow_nan=False)


points = st.floats() | st.integers(-10**400, 10**400) | st.sampled_from([1e308, -1e308, 5e-324, 10**309, True])


@SETTINGS
@given(pts=st.lists(points, min_size=1, max_size=6), data=st.data())
def test_every_accepted_healthbench_row_scores_finite_and_imports_valid(pts, data):
    row = {"prompt": [{"role": "user", "content": "q"}], "prompt_id": "p",
           "rubrics": [{"criterion": f"c{i}", "points": p, "tags": []} for i, p in enumerate(pts)]}
    if healthbench.record_problems(row):
        return
    met = data.draw(st.lists(st.booleans(), min_size=len(pts), max_size=len(pts)))
    result = healthbench.score([row], {"p": met})
    json.dumps(result, allow_nan=False)
    assert rubric_problems(healthbench.to_rubric(row).to_dict()) == []


# ---------------------------------------------------------------------------------------------- round trips
texts = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12).filter(lambda s: s.strip())
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}),
                    max_size=2).map(lambda ms: ms + [{"role": "user", "content": "last question"}])
tags = st.lists(st.sampled_from(["axis:accuracy", "axis:completeness", "level:example", "cluster:x", "axis:"]) | texts, max_size=3)
extra_fields = st.dictionaries(st.sampled_from(["canary", "ideal_completions_data", "example_tags", "completion", "x"]),
                               json_values, max_size=4)


@st.composite
def healthbench_rows(draw):
    n = draw(st.integers(1, 6))
    items = []
    for i in range(n):
        magnitude = draw(st.floats(1e-6, 1e6) | st.integers(1, 100))
        sign = 1 if i == 0 else draw(st.sampled_from([1, -1]))
        item = {"criterion": draw(texts), "points": sign * magnitude}
        if draw(st.booleans()):
            item["tags"] = draw(tags)
        item.update(draw(st.dictionaries(st.sampled_from(["weight_hint", "note"]), json_values, max_size=1)))
        items.append(item)
    order = draw(st.permutations(range(n)))
    row = {"prompt": draw(messages), "prompt_id": draw(ids), "rubrics": [items[k] for k in order]}
    extra = draw(extra_fields)
    if "example_tags" in extra:
        extra["example_tags"] = draw(tags)
    row.update(extra)
    return row


@st.composite
def kit_rubrics(draw):
    shares = draw(st.lists(st.integers(1, 100), min_size=1, max_size=4))
    weights = [s / sum(shares) for s in shares]
    weights[-1] = 1.0 - math.fsum(weights[:-1])
    optional = lambda: draw(st.none() | texts)  # noqa: E731
    criteria = []
    for tier, count in (("proficiency", len(weights)), ("bonus", draw(st.integers(0, 2))), ("veto", draw(st.integers(0, 2)))):
        for i in range(count):
            c = {"id": f"{tier[0]}{i + 1}-{draw(ids)}"[:128], "tier": tier, "text": draw(texts)}
            if tier == "proficiency":
                c["weight"] = weights[i]
            for key in ("dimension", "adheres", "violates"):
                if (v := optional()) is not None:
                    c[key] = v
            if draw(st.booleans()):
                c["check"] = {"mention_any": [draw(texts)], "min_words": draw(st.integers(0, 5))}
            if draw(st.booleans()):
                c["provenance"] = draw(st.dictionaries(st.sampled_from(["healthbench", "author", "healthbench_points"]),
                                                       json_values, max_size=2))
            criteria.append(c)
    order = draw(st.permutations(range(len(criteria))))
    rec = {"id": draw(ids), "instruction": draw(texts | messages), "criteria": [criteria[k] for k in order]}
    for key in ("category", "specialty"):
        if (v := optional()) is not None:
            rec[key] = v
    if draw(st.booleans()):
        rec["provenance"] = draw(st.dictionaries(st.sampled_from(["source", "healthbench", "example_tags", "x"]),
                                                 json_values, max_size=3))
    return rec


def _via_json(obj):
    return loads(json.dumps(obj, ensure_ascii=False))


@SETTINGS
@given(row=healthbench_rows())
def test_healthbench_to_kit_to_healthbench_is_exact(row):
    assert healthbench.record_problems(row) == []
    kit = _via_json(healthbench.to_rubric(row).to_dict())
    assert rubric_problems(kit) == []
    back = _via_json(healthbench.from_rubric(Rubric.from_dict(kit)))
    assert json.dumps(back, sort_keys=True) == json.dumps(row, sort_keys=True)  # every field, nothing added, ints stay ints


@SETTINGS
@given(rec=kit_rubrics())
def test_kit_to_healthbench_to_kit_is_exact(rec):
    assume(rubric_problems(rec) == [])
    row = _via_json(healthbench.from_rubric(Rubric.from_dict(rec)))
    assert healthbench.record_problems(row) == []
    back = healthbench.to_rubric(row).to_dict()
    assert json.dumps(back, sort_keys=True) == json.dumps(Rubric.from_dict(rec).to_dict(), sort_keys=True)


def test_a_row_edited_after_export_is_refused_not_half_applied():
    rubric = Rubric.from_dict(make_rubric("a"))
    row = healthbench.from_rubric(rubric)
    assert healthbench.KIT_FIELD in row  # the bonus tier needs the kit rubric alongside
    row["rubrics"][0]["points"] = 9.0
    with pytest.raises(ValueError, match="does not match"):
        healthbench.to_rubric(row)
    assert any(p == healthbench.KIT_FIELD for p, _ in healthbench.record_problems(row))


@SETTINGS
@given(row=healthbench_rows(), shares=st.lists(st.integers(1, 50), min_size=6, max_size=6))
def test_weights_edited_in_the_kit_are_what_healthbench_scores(row, shares):
    kit = healthbench.to_rubric(row)
    prof = kit.tier("proficiency")
    total = sum(shares[:len(prof)])
    for c, s in zip(prof, shares):
        c.weight = s / total
    prof[-1].weight = 1.0 - math.fsum(c.weight for c in prof[:-1])
    out = healthbench.from_rubric(kit)
    positive = [(c, item["points"]) for c, item in zip(kit.criteria, out["rubrics"]) if c.tier == "proficiency"]
    scale = math.fsum(p for _, p in positive)
    assert all(abs(p / scale - c.weight) < 1e-5 for c, p in positive)
    assert healthbench.to_rubric(_via_json(out)) == kit


@SETTINGS
@given(rows=st.lists(healthbench_rows(), min_size=1, max_size=3, unique_by=lambda r: r["prompt_id"]))
def test_import_writes_only_what_the_kit_reads_back(rows, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("import")
    src, out, back = folder / "hb.jsonl", folder / "kit.jsonl", folder / "hb2.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert _run(["healthbench", "import", src, out], capsys)[0] == 0
    assert [r.id for r in read_rubrics(out)] == [r["prompt_id"] for r in rows]
    assert _run(["healthbench", "export", out, back], capsys)[0] == 0
    assert [loads(line) for line in back.read_text(encoding="utf-8").split("\n") if line] == rows


def test_import_refuses_a_row_whose_conversion_would_be_over_the_line_limit(tmp_path, capsys):
    n = 150_000  # ~5 MB of HealthBench row, ~20 MB once each criterion carries its kit fields
    row = {"prompt": [{"role": "user", "content": "q"}], "prompt_id": "big",
           "rubrics": [{"criterion": "c", "points": 1} for _ in range(n)]}
    src, out = tmp_path / "hb.jsonl", tmp_path / "kit.jsonl"
    src.write_text(json.dumps(row) + "\n")
    assert src.stat().st_size < MAX_LINE_BYTES
    code, _, err = _run(["healthbench", "import", src, out], capsys)
    assert code == 1 and "over the" in err and len(err.splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- output files
def _non_regular(kind, path):
    if kind == "fifo":
        os.mkfifo(path)
        return None
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return sock
    path.mkdir()
    return None


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory"])
@pytest.mark.parametrize("writer", [lambda p: atomic_write_text(p, "x"), lambda p: write_json(p, {}),
                                    lambda p: write_jsonl(p, [{}]), lambda p: append_jsonl(p, {})],
                         ids=["atomic_write_text", "write_json", "write_jsonl", "append_jsonl"])
def test_a_non_regular_output_is_refused_and_left_alone(kind, writer, tmp_path):
    path = tmp_path / "out"
    keep = _non_regular(kind, path)
    before = os.stat(path)
    with pytest.raises(OutputError):
        writer(path)
    after = os.stat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    if keep:
        keep.close()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o664, 0o755, 0o444])
def test_an_existing_file_keeps_its_mode(mode, tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    path.chmod(mode)
    write_json(path, {"new": 1})
    assert stat.S_IMODE(path.stat().st_mode) == mode and json.loads(path.read_text()) == {"new": 1}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_a_new_file_honours_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        append_jsonl(tmp_path / "b.jsonl", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_an_output_whose_folder_cannot_be_made_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file" / "out.txt", tmp_path / "file" / "deeper" / "out.txt"):
        with pytest.raises(OutputError, match="folder"):
            atomic_write_text(path, "x")


# ---------------------------------------------------------------------------------------------- redirects
class _Server:
    """A real HTTP server on 127.0.0.1 that records the Authorization header of every request and
    either redirects (to ``self.location``) or answers a chat completion."""

    def __init__(self, redirect_code=None):
        self.seen, self.redirect_code, self.location = [], redirect_code, None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append((self.command, self.path, self.headers.get("Authorization")))
                if server.redirect_code and self.path.startswith("/v1/"):
                    self.send_response(server.redirect_code)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made = []

    def make(code=None):
        made.append(_Server(code))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _client(port, host="127.0.0.1"):
    from promedical.models.llm import OpenAICompatibleLLM

    return OpenAICompatibleLLM(f"http://{host}:{port}/v1", "m", api_key="sk-secret", max_retries=0, timeout=10)


@pytest.mark.parametrize("code", [301, 302, 303])
@pytest.mark.parametrize("other", ["port", "host"])
def test_the_api_key_never_follows_a_cross_origin_redirect(code, other, servers):
    target = servers()
    front = servers(code)
    host = "localhost" if other == "host" else "127.0.0.1"
    front.location = f"http://{host}:{target.port if other == 'port' else front.port}/landing"
    from promedical.models.llm import HTTPError

    with pytest.raises(HTTPError, match=f"HTTP {code} redirect"):  # not followed at all (test_client_hardening.py)
        _client(front.port).generate([[{"role": "user", "content": "hi"}]])
    landed = target.seen if other == "port" else [s for s in front.seen if s[1] == "/landing"]
    assert front.seen[0][2] == "Bearer sk-secret"  # the configured origin gets the key
    assert landed == []


def test_a_same_origin_redirect_keeps_the_api_key(servers):
    front = servers(307)
    front.location = f"http://127.0.0.1:{front.port}/landing"
    assert _client(front.port).generate([[{"role": "user", "content": "hi"}]]) == ["ok"]
    assert [auth for _, _, auth in front.seen] == ["Bearer sk-secret", "Bearer sk-secret"]


@pytest.mark.parametrize("code", [307, 308])
def test_a_redirect_that_would_resend_the_body_is_not_followed(code, servers):
    from promedical.models.llm import HTTPError

    target = servers()
    front = servers(code)
    front.location = f"http://127.0.0.1:{target.port}/landing"
    with pytest.raises(HTTPError, match=str(code)):
        _client(front.port).generate([[{"role": "user", "content": "hi"}]])
    assert target.seen == []


def test_a_judge_answer_with_a_repeated_key_is_no_grade():
    from promedical.reward.judge import parse_grade

    assert parse_grade('{"explanation": "ok", "criteria_met": true}')[0] is True
    met, why = parse_grade('{"explanation": "ok", "criteria_met": true, "criteria_met": false}')
    assert met is None and "unparseable" in why


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputError):
        write_json(tmp_path / "a", {})
