"""The Python snippets README.md shows live in examples/; each is imported and run here."""

from __future__ import annotations

import sqlite3

from examples import many_users_sqlite


async def test_many_users_on_one_sqlite_file_each_recall_their_own_fact(tmp_path, capsys):
    await many_users_sqlite.main()  # the test runs in tmp_path, so sessions.db is made there
    assert capsys.readouterr().out.strip() == "Your email is u42@example.com."
    with sqlite3.connect(tmp_path / "sessions.db") as conn:
        rows = conn.execute("SELECT session_id, count(*) FROM agent_messages GROUP BY session_id").fetchall()
    assert len(rows) == 100 and {count for _, count in rows} == {4}
