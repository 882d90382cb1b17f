"""The machinery under the lessons (agent.py, serve.py): everything a reader need not learn first.

Imports flow one way: errors, naming, items -> locks -> offline_model, settings, failures -> models ->
stores -> inventory, observers -> turns -> chat, web, metrics, tracing -> cli. Nothing here imports
a lesson or a tool; metrics and tracing need the server's packages (requirements-serve.txt).
"""

from multisessions.approvals import Approval, pending_approvals
from multisessions.conversations import (
    Conversation,
    ConversationPage,
    backfill_conversations,
    list_conversations,
    set_tags,
)
from multisessions.effects import Ledger
from multisessions.errors import (
    AwaitingApproval,
    ConfigError,
    LeaseLost,
    MultiSessionsError,
    SessionBusy,
    StoreError,
    TurnFailed,
    TurnInterrupted,
    UsageError,
    WrongKey,
)
from multisessions.failures import describe_failure, failure_kind
from multisessions.inventory import (
    delete_sessions,
    delete_user_sessions,
    expire_sessions,
    find_session,
    format_listing,
    list_sessions,
)
from multisessions.items import ALL_ITEMS, history_lines, item_summary, message_text, read_all, title_of
from multisessions.locks import ON_BUSY, OnBusy, held_locks, hold_session
from multisessions.memory import remember, with_memory
from multisessions.models import ModelLike, describe_model, resolve_model
from multisessions.naming import (
    ParsedSessionId,
    check_session_id,
    dated_session_id,
    feature_session_id,
    make_session_id,
    memory_scope,
    parse_session_id,
    thread_session_id,
    user_scope,
    user_session_id,
)
from multisessions.observers import TurnObserver, outcome_of, watch_turns
from multisessions.offline_model import OfflineModel
from multisessions.settings import Settings, load_settings
from multisessions.stores import (
    DEFAULT_DB,
    EncryptedStore,
    RedisStore,
    SessionInfo,
    SessionStore,
    SQLitePool,
    SQLiteStore,
    SQLStore,
    close_session,
    open_store,
    store_for,
)
from multisessions.turns import (
    MAX_MESSAGE_CHARS,
    PendingTurn,
    check_message,
    find_agent,
    one_turn,
    resume_turn,
    run_turn,
    stream_turn,
)
from multisessions.users import Forgotten, export_user, forget_user

__all__ = [
    "Approval",
    "AwaitingApproval",
    "pending_approvals",
    "resume_turn",
    "ALL_ITEMS",
    "DEFAULT_DB",
    "MAX_MESSAGE_CHARS",
    "ConfigError",
    "EncryptedStore",
    "ModelLike",
    "MultiSessionsError",
    "OfflineModel",
    "ParsedSessionId",
    "PendingTurn",
    "RedisStore",
    "SQLStore",
    "SQLitePool",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "Settings",
    "StoreError",
    "WrongKey",
    "TurnFailed",
    "TurnInterrupted",
    "OnBusy",
    "ON_BUSY",
    "UsageError",
    "check_message",
    "check_session_id",
    "close_session",
    "dated_session_id",
    "delete_sessions",
    "delete_user_sessions",
    "describe_failure",
    "failure_kind",
    "TurnObserver",
    "outcome_of",
    "watch_turns",
    "describe_model",
    "expire_sessions",
    "feature_session_id",
    "find_session",
    "format_listing",
    "history_lines",
    "item_summary",
    "list_sessions",
    "load_settings",
    "make_session_id",
    "message_text",
    "open_store",
    "store_for",
    "parse_session_id",
    "read_all",
    "title_of",
    "resolve_model",
    "run_turn",
    "hold_session",
    "held_locks",
    "SessionBusy",
    "LeaseLost",
    "Ledger",
    "find_agent",
    "one_turn",
    "stream_turn",
    "thread_session_id",
    "user_session_id",
    "memory_scope",
    "remember",
    "user_scope",
    "with_memory",
    "Forgotten",
    "export_user",
    "forget_user",
    "Conversation",
    "ConversationPage",
    "backfill_conversations",
    "list_conversations",
    "set_tags",
]
