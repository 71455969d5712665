"""The database: private files, and a user's rows gone without a trace when they ask."""

import os
import stat

from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select

from core.infra.store import Store


def test_the_data_folder_and_database_are_private(tmp_path):
    store = Store(tmp_path / "data" / "aipbot.sqlite3")
    store.close()
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "aipbot.sqlite3").st_mode) == 0o600


def test_forgetting_a_user_deletes_their_quota_rows_and_leaves_no_copy_in_the_files(tmp_path):
    path = tmp_path / "aipbot.sqlite3"
    store = Store(path)
    store.execute("CREATE TABLE notes (user_id INTEGER, note TEXT)")
    marker = "MARKER-7c1f0e"
    store.execute("INSERT INTO notes VALUES (?, ?)", (4242, marker))
    assert store.use_quota(4242, "ocr", "2026-12-01", 5)
    assert store.use_quota(7, "ocr", "2026-12-01", 5)
    assert store.forget_user(4242, tables=("notes",)) == 2
    assert store.quota_used(4242, "ocr", "2026-12-01") == 0
    assert store.quota_used(7, "ocr", "2026-12-01") == 1
    store.close()
    for file in tmp_path.iterdir():
        assert marker.encode() not in file.read_bytes(), file.name


def test_forgetting_a_user_deletes_their_rows_on_either_database(store_target):
    store = Store(store_target)
    notes = Table("notes", MetaData(), Column("user_id", BigInteger), Column("note", Text))
    store.create(notes)
    store.execute(notes.insert().values(user_id=4242, note="MARKER-7c1f0e"))
    assert store.use_quota(4242, "ocr", "2026-12-01", 5)
    assert store.use_quota(7, "ocr", "2026-12-01", 5)
    assert store.forget_user(4242, tables=(notes,)) == 2
    assert store.quota_used(4242, "ocr", "2026-12-01") == 0
    assert store.quota_used(7, "ocr", "2026-12-01") == 1
    assert store.execute(select(notes)) == []
    store.close()
