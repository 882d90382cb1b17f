"""The programs the documentation site shows live in examples/; each is imported and run here."""

from __future__ import annotations

import sqlite3

from examples import many_users_sqlite, streamed_turn


async def test_many_users_on_one_sqlite_file_each_recall_their_own_fact(tmp_path, capsys):
    await many_users_sqlite.main()  # the test runs in tmp_path, so sessions.db is made there
    assert capsys.readouterr().out.strip() == "Your email is u42@example.com."
    with sqlite3.connect(tmp_path / "sessions.db") as conn:
        rows = conn.execute("SELECT session_id, count(*) FROM agent_messages GROUP BY session_id").fetchall()
    assert len(rows) == 100 and {count for _, count in rows} == {4}


async def test_a_streamed_turn_prints_word_by_word_and_is_stored_once_whole(tmp_path, capsys):
    await streamed_turn.main()
    assert capsys.readouterr().out == "Your name is Ada.\n"
    with sqlite3.connect(tmp_path / "sessions.db") as conn:
        assert conn.execute("SELECT count(*) FROM agent_messages").fetchone()[0] == 3
