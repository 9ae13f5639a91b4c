"""The AI builder plans a pipeline that starts from a Notion database (POST /api/v1/plan against
the fake OpenAI-compatible server); the stored pipeline's trigger is live at once: a row added
to FakeNotion starts one run, which marks the row through notion.update_page."""

from __future__ import annotations

from levqor_notion.fake import FakeNotion
from levqor_openai.fake import FakeOpenAI
from trigger_support import TriggerHosts

KEY = "sk-test-planner-0123456789abcdef"
TOKEN = "ntn_planned_token_1234567890"


def plan_answer(db: str, credential: str) -> dict:
    return {
        "explanation": "Marks each new item of the Notion database as triaged.",
        "pipeline": {
            "levqor": 1,
            "name": "triage new notion items",
            "trigger": {
                "type": "app",
                "connector": "notion",
                "trigger": "new_database_item",
                "credential": credential,
                "config": {"database_id": db},
                "interval": 1,  # the harness's hosts allow polls every second
            },
            "steps": [
                {
                    "id": "triage",
                    "connector": "notion",
                    "action": "update_page",
                    "credential": credential,
                    "payload": {
                        "page_id": "{{ trigger.id }}",
                        "properties": {"Status": {"select": {"name": "Triaged"}}},
                    },
                }
            ],
        },
    }


def test_a_planned_notion_trigger_starts_runs(tmp_path) -> None:
    with FakeOpenAI(api_key=KEY) as ai, FakeNotion(token=TOKEN) as notion:
        db = notion.add_database(properties={"Status": "select"})
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": ai.base_url,
            "LEVQOR_PLANNER_MAX_RETRIES": "0",
            "LEVQOR_NOTION_API_BASE": notion.url,
        }
        with TriggerHosts(tmp_path, env=env) as th:
            c = th.client
            # no credential yet: the plan is stored with a warning naming the trigger's
            ai.answer_plan(plan_answer(db, "my-notion"))
            r = c.post("/api/v1/plan", json={"prompt": "triage new rows", "dry_run": True})
            assert r.status_code == 200, r.text
            warnings = {w["pointer"]: w for w in r.json()["warnings"]}
            assert set(warnings) == {"/trigger/credential", "/steps/0/credential"}
            for w in warnings.values():
                assert (w["connector"], w["credential"]) == ("notion", "my-notion")
                assert "add a notion credential named 'my-notion'" in w["message"]

            th.add_credential("my-notion", "notion", {"token": TOKEN})
            seen: list[bool] = []

            def check(body):
                system = body["messages"][0]["content"]
                seen.append("new_database_item" in system and "my-notion" in system)
                return None

            ai.check = check
            ai.answer_plan(plan_answer(db, "my-notion"))
            r = c.post("/api/v1/plan", json={"prompt": "when a row is added to my Notion "
                                              "database, mark it triaged"})  # fmt: skip
            assert r.status_code == 201, r.text
            assert r.json()["warnings"] == [] and seen == [True]
            pid = r.json()["id"]
            th.wait_baseline(pid)
            row = notion.add_page(db, {"Name": "from a planned pipeline"})
            (run,) = th.wait_runs(pid, 1)
            assert run["status"] == "succeeded" and run["input"]["id"] == row
            assert notion.values(row)["Status"] == "Triaged"
