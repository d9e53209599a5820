"""Who holds an identifier value when several profiles of one batch name it, on both stores."""

from __future__ import annotations

import time

from tests.fixtures.connector import Deployment

GOAL = """\
kind: import-profiles
name: people
files: [{name: people, directory: in, pattern: "people_*.csv"}]
stable_after_s: 0
identifiers: [{field: id, property: crm_id}, {field: email, property: email}]
mappings:
  - {field: email, property: email, rule: add}
  - {field: tag, property: tags, rule: add}
"""


def tags_by_crm_id(deployment: Deployment) -> dict[str, list[str]]:
    return {props["crm_id"][0]: props.get("tags", []) for props in deployment.properties()}


def test_a_stored_profile_claims_a_value_before_new_ones_and_a_held_value_stays_put(deployment: Deployment) -> None:
    deployment.write_goal("people", GOAL)
    old = time.time() - 3600
    deployment.put("in/people_1.csv", "id,email,tag\nS1,s@x.com,\n", mtime=old)
    assert deployment.run().status == "success"
    deployment.put("in/people_2.csv", "\n".join([
        "id,email,tag",
        "S1,z@x.com,",  # the stored profile adds z@x.com …
        "N1,z@x.com,",  # … which a new profile is created with in the same batch: the stored one holds it
        "N2,n2@x.com,",
        "N2,s@x.com,",  # a new profile adds a value the stored one holds: it stays with the stored one
    ]) + "\n", mtime=old + 1)
    assert deployment.run().status == "success"
    emails = {props["crm_id"][0]: props["email"] for props in deployment.properties()}
    assert emails == {"S1": ["s@x.com", "z@x.com"], "N1": ["z@x.com"], "N2": ["n2@x.com", "s@x.com"]}

    # Rows with only an email go to the profile the index says holds it.
    deployment.put("in/people_3.csv", "id,email,tag\n,z@x.com,by-z\n,s@x.com,by-s\n,n2@x.com,by-n2\n", mtime=old + 2)
    assert deployment.run().status == "success"
    assert tags_by_crm_id(deployment) == {"S1": ["by-z", "by-s"], "N1": [], "N2": ["by-n2"]}


def test_a_new_profile_not_created_leaves_no_value_in_the_index(deployment: Deployment) -> None:
    # Without consent the first two rows create nothing; the third row's profile is the batch's only new one.
    deployment.update_connector({"privacy": {"objectives": ["marketing"]}})
    deployment.write_goal("people", GOAL + "  - {field: consent, property: consented_objectives, rule: add}\n")
    old = time.time() - 3600
    deployment.put("in/people_1.csv", "id,email,tag,consent\nB1,b@x.com,b,\nC1,c@x.com,c,\nA1,a@x.com,a,marketing\n",
                   mtime=old)
    result = deployment.run()
    assert result.status == "success" and result.goals[0].files[0].counts.no_consent == 2
    assert tags_by_crm_id(deployment) == {"A1": ["a"]}
    # The refused rows' values were never indexed: these rows make profiles of their own.
    deployment.put("in/people_2.csv", "id,email,tag,consent\n,b@x.com,b2,marketing\nC1,,c2,marketing\n", mtime=old + 1)
    assert deployment.run().status == "success"
    assert sorted((p.get("crm_id", []), p.get("email", []), p["tags"]) for p in deployment.properties()) == [
        ([], ["b@x.com"], ["b2"]), (["A1"], ["a@x.com"], ["a"]), (["C1"], [], ["c2"])]
