"""A file merged in many small batches gives exactly what one batch gives: order, identity, sums, re-imports."""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from sftp_connector import merge
from sftp_connector.goals import imports
from tests.fixtures.connector import Deployment
from tests.fixtures.postgres import new_database

GOAL = """\
kind: import-profiles
name: mixed
files: [{name: mixed, directory: in, pattern: "mixed.csv"}]
stable_after_s: 0
max_reject_ratio: 0.5
identifiers: [{field: email, property: email}, {field: id, property: crm_id}]
mappings:
  - {field: name, property: name, rule: set}
  - {field: phone, property: phone, rule: set_if_empty}
  - {field: fax, property: fax, rule: set_or_clear}
  - {field: tags, property: tags, rule: add}
  - {field: points, property: points, rule: sum}
"""


def mixed_file(seed: int, rows: int = 60) -> str:
    """Rows that revisit a few customers by either identifier, with empty and bad cells."""
    pick = random.Random(seed)
    lines = ["email,id,name,phone,fax,tags,points"]
    for n in range(rows):
        who = pick.randrange(8)
        email = f"c{who}@x.com" if pick.random() < 0.7 else ""
        ident = f"C{who}" if not email or pick.random() < 0.5 else ""
        lines.append(",".join([
            email, ident, pick.choice(["", f"Name{n}"]), pick.choice(["", f"+31{n}"]), pick.choice(["", f"fax{n}"]),
            "|".join(pick.sample(["a", "b", "c", "d"], pick.randrange(3))), pick.choice(["", str(n), "1.5", "x"]),
        ]))
    return "\n".join(lines) + "\n"


def snapshot(deployment: Deployment) -> list[dict]:
    return sorted(deployment.properties(), key=lambda p: (p.get("crm_id", [""]), p.get("email", [""])))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_batches_match_one_batch(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, seed: int
) -> None:
    deployment.write_goal("mixed", GOAL)
    old = time.time() - 3600
    deployment.put("in/mixed.csv", mixed_file(seed), mtime=old)
    first = deployment.run()
    assert first.status == "success", first.goals[0].error
    whole = snapshot(deployment)
    deployment.put("in/mixed.csv", mixed_file(seed + 100), mtime=old + 60)
    deployment.run()
    whole_after_edit = snapshot(deployment)

    if deployment.store_url.startswith("sqlite"):
        url = deployment.store_url.replace("connector.db", "batched.db")
    else:
        url = new_database(request.getfixturevalue("postgres_server"))
    other = Deployment(deployment.dir, deployment.remote, deployment.keys, url)
    other.update_connector({"store": {"url": url}})
    monkeypatch.setattr(imports, "BATCH_ROWS", 4)
    batches = []
    monkeypatch.setattr(merge.Pipeline, "apply",
                        lambda self, *args, _apply=merge.Pipeline.apply: batches.append(1) or _apply(self, *args))
    deployment.put("in/mixed.csv", mixed_file(seed), mtime=old)
    assert other.run().status == "success"
    assert len(batches) >= 10  # 60 rows in batches of about 4
    assert snapshot(other) == whole
    deployment.put("in/mixed.csv", mixed_file(seed + 100), mtime=old + 60)
    other.run()
    assert snapshot(other) == whole_after_edit


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Batches of 4 rows; (batches read on the second connection, batches read again) of every pipeline of
    the test, as each finishes."""
    monkeypatch.setattr(imports, "BATCH_ROWS", 4)
    counted: list[tuple[int, int]] = []

    def exit_(self: merge.Pipeline, *exc: object, _exit=merge.Pipeline.__exit__) -> None:  # type: ignore[no-untyped-def]
        _exit(self, *exc)
        counted.append((self.side_reads, self.rereads))

    monkeypatch.setattr(merge.Pipeline, "__exit__", exit_)
    return counted


def customers(numbers: list[int], name: str = "Name", points: int = 1) -> str:
    lines = ["email,id,name,phone,fax,tags,points"]
    lines += [f"c{n}@x.com,C{n},{name}{n},+31{n},fax{n},t{n % 3},{points}" for n in numbers]
    return "\n".join(lines) + "\n"


def loaded(deployment: Deployment, count: int) -> None:
    """Write the goal and import `count` customers (the store the test's next file meets)."""
    deployment.write_goal("mixed", GOAL)
    deployment.put("in/mixed.csv", customers(list(range(count))), mtime=time.time() - 3600)
    assert deployment.run().status == "success"


def test_disjoint_batches_are_read_while_the_previous_batch_is_written(
    deployment: Deployment, reads: list[tuple[int, int]]
) -> None:
    loaded(deployment, 40)
    deployment.put("in/mixed.csv", customers(list(range(40)), name="New", points=5), mtime=time.time() - 3000)
    assert deployment.run().status == "success"
    # Ten batches or more each, none read again; the second file's all read beside the writes (the first's
    # are not: it adds columns and identifier values).
    assert reads[0] == (0, 0) and reads[1][0] >= 10 and reads[1][1] == 0
    profiles = {p["crm_id"][0]: p for p in deployment.properties()}
    assert len(profiles) == 40
    assert profiles["C7"] == {"crm_id": ["C7"], "email": ["c7@x.com"], "name": ["New7"], "phone": ["+317"],
                           "fax": ["fax7"], "tags": ["t1"], "points": [5.0]}


def test_a_batch_that_reads_what_the_previous_one_writes_is_read_again_after_the_write(
    deployment: Deployment, reads: list[tuple[int, int]]
) -> None:
    deployment.write_goal("mixed", GOAL)
    lines = ["email,id,name,phone,fax,tags,points",
             "c1@x.com,C1,One,,,a,1", "c2@x.com,C2,Two,,,a,1", "c3@x.com,C3,Three,,,a,1", "c4@x.com,,Four,,,a,1",
             # batch 2: C1 again (a profile batch 1 creates), c4 by its email, C4 new on the row that only
             # batch 1's profile has the email of
             ",C1,One again,+311,,b,2", "c4@x.com,C4,,,,b,2", "c5@x.com,C5,Five,,,a,1", "c6@x.com,C6,Six,,,a,1",
             # batch 3: nothing of batch 2
             "c7@x.com,C7,Seven,,,a,1", "c8@x.com,C8,Eight,,,a,1", "c9@x.com,C9,Nine,,,a,1", "c0@x.com,C0,Zero,,,a,1"]
    deployment.put("in/mixed.csv", "\n".join(lines) + "\n", mtime=time.time() - 3600)
    assert deployment.run().status == "success"
    assert reads == [(0, 1)]
    by_email = {p["email"][0]: p for p in deployment.properties()}
    assert len(by_email) == 10
    assert by_email["c1@x.com"] == {"email": ["c1@x.com"], "crm_id": ["C1"], "name": ["One again"],
                                    "phone": ["+311"], "tags": ["a", "b"], "points": [3.0]}
    assert by_email["c4@x.com"] == {"email": ["c4@x.com"], "name": ["Four"], "tags": ["a", "b"], "points": [3.0]}


def test_a_failed_write_on_the_writer_thread_fails_the_file_and_writes_nothing(
    deployment: Deployment, reads: list[tuple[int, int]]
) -> None:
    loaded(deployment, 3)
    before = snapshot(deployment)
    # A real database error in the third batch's write: the rows it remembers are refused.
    engine = sa.create_engine(deployment.store_url)
    sqlite = deployment.store_url.startswith("sqlite")
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON imported_rows WHEN NEW.seq = 3 "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.seq = 3 THEN "
                                 "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON imported_rows FOR EACH ROW "
                                 "EXECUTE FUNCTION refuse()")
    deployment.put("in/mixed.csv", customers(list(range(40)), name="New"), mtime=time.time() - 3000)
    failed = deployment.run()
    assert failed.status == "failed"
    assert "refused by the test" in failed.goals[0].files[0].error
    assert snapshot(deployment) == before  # nothing of the file: batches 1 and 2 were written, then rolled back
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse" if sqlite else "DROP TRIGGER refuse ON imported_rows")
    engine.dispose()
    assert deployment.run().status == "success"
    assert len(snapshot(deployment)) == 40


def test_a_batch_read_beside_the_writes_that_finds_what_the_file_changed_is_read_again(
    deployment: Deployment, reads: list[tuple[int, int]]
) -> None:
    loaded(deployment, 12)
    lines = ["email,id,name,phone,fax,tags,points",
             "c0@x.com,C0,Zero,,,x,1", "c1@x.com,C1,One,,,x,1", "c2@x.com,C2,Two,,,x,1", "c3@x.com,C3,Three,,,x,1",
             "c4@x.com,C4,Four,,,x,1", "c5@x.com,C5,Five,,,x,1", "c6@x.com,C6,Six,,,x,1", "c7@x.com,C7,Seven,,,x,1",
             # batch 3: C0 again (batch 1 changed it) and a new customer
             ",C0,Zero again,,,y,2", "n1@x.com,N1,New,,,x,1", "c8@x.com,C8,Eight,,,x,1", "c9@x.com,C9,Nine,,,x,1",
             # batch 4: the new customer by the email batch 3 added
             "n1@x.com,,New again,,,y,2", "c10@x.com,C10,Ten,,,x,1", "c11@x.com,C11,Eleven,,,x,1"]
    deployment.put("in/other.csv", "\n".join(lines) + "\n", mtime=time.time() - 3000)
    deployment.write_goal("mixed", GOAL.replace('"mixed.csv"', '"other.csv"'))
    assert deployment.run().status == "success"
    side_reads, rereads = reads[-1]
    assert side_reads >= 3 and rereads >= 1
    by_id = {p["crm_id"][0]: p for p in deployment.properties()}
    assert len(by_id) == 13
    assert by_id["C0"]["name"] == ["Zero again"] and by_id["C0"]["tags"] == ["t0", "x", "y"]
    assert by_id["C0"]["points"] == [4.0]  # 1 from the first file, 1 + 2 from this one
    assert by_id["N1"] == {"crm_id": ["N1"], "email": ["n1@x.com"], "name": ["New again"], "tags": ["x", "y"],
                           "points": [3.0]}
