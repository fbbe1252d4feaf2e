"""The one rule for queue names, checked before a name reaches a file path, a key, a table or a topic.

A queue's name is its name on the broker and, for the embedded brokers and log files, part of a
file name. So a name is refused, with a ``ValueError`` saying what is allowed, when it:

- is empty, or is ``.`` or ``..``, or contains ``/`` or ``\\`` (it would leave its folder);
- contains a control character (NUL, newline, tab, DEL ...), or text that is not valid UTF-8;
- is longer than ``MAX_QUEUE_NAME_BYTES`` bytes of UTF-8, not counting one ``_dlq`` suffix (so the
  dead-letter queue of every accepted name is accepted too, and ``<name>.sqlite``, ``<name>.log.5``
  and fsdf's ``fsdf.delay.<name>.<n>`` fit every backend's limit);
- starts with ``fsdf_``, ``fsdf:``, ``fsdf.`` or ``fsdf-`` in any case: fsdf's own tables,
  collections, keys and topics (``fsdf_leases``, ``fsdf_consumers``, ``fsdf_schedule``...) live there;
- breaks the broker's own rule (``Broker.queue_name_problem``: Kafka topic characters, MongoDB
  collection names, RabbitMQ's ``amq.`` prefix, SQLite's ``sqlite_`` prefix).

Anything else (spaces, quotes, unicode) is allowed where the broker allows it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from fsdf.brokers.base import Broker
    from fsdf.enums import BrokerEnum

# 255 bytes is the file-name limit of common file systems; 200 leaves room for '.sqlite', '.log.5',
# '_dlq' and 'fsdf.delay.<name>.<ttl ms>', and stays under Kafka's 249 and RabbitMQ's 255.
MAX_QUEUE_NAME_BYTES = 200
DEAD_LETTER_SUFFIX = '_dlq'
RESERVED_PREFIXES = ('fsdf_', 'fsdf:', 'fsdf.', 'fsdf-')
ALLOWED = (f'a queue name is 1 to {MAX_QUEUE_NAME_BYTES} bytes of UTF-8 without "/", "\\" or control '
           f'characters, is not "." or "..", and does not start with fsdf_, fsdf:, fsdf. or fsdf- '
           f'(reserved for fsdf\'s own tables and keys)')


def generic_problem(name: object) -> Optional[str]:
    """What is wrong with ``name`` on every broker, or None if nothing is."""
    if not isinstance(name, str):
        return f'must be a str, not {type(name).__name__}'
    if not name:
        return 'is empty'
    if '/' in name or '\\' in name or name in ('.', '..'):
        return 'would be a path outside the queue folder'
    if _has_control_character(name):
        return 'contains a control character or an unpaired surrogate'
    if len(name.removesuffix(DEAD_LETTER_SUFFIX).encode('utf-8')) > MAX_QUEUE_NAME_BYTES:
        return f'is {len(name.encode("utf-8"))} bytes long'
    if name.lower().startswith(RESERVED_PREFIXES):
        return 'is reserved for fsdf itself'
    return None


def _has_control_character(name: str) -> bool:
    """Whether ``name`` holds a character of Unicode category Cc (control) or Cs (surrogate)."""
    if name.isascii():  # Cc in ASCII is U+0000-U+001F and U+007F, and there are no surrogates: no unicodedata
        return any(char < ' ' or char == '\x7f' for char in name)
    import unicodedata  # here: most names are ASCII, and a worker's start need not load it (issue 19)
    return any(unicodedata.category(char) in ('Cc', 'Cs') for char in name)


def check_queue_name(name: str, broker: 'Optional[type[Broker] | BrokerEnum]' = None) -> str:
    """``name`` if it is a valid queue name (for that broker class or kind, if given), else ValueError."""
    problem = generic_problem(name)
    if problem is None and broker is not None:
        broker_cls = broker if isinstance(broker, type) else _class_of(broker)
        problem = broker_cls.queue_name_problem(name) if broker_cls is not None else None
    if problem is not None:
        shown = name if not isinstance(name, str) or len(name) <= 60 else f'{name[:57]}...'
        raise ValueError(f'queue name {shown!r} {problem}; {ALLOWED}')
    return name


def _class_of(kind: 'BrokerEnum') -> 'Optional[type[Broker]]':
    """The broker class of a kind, or None when its client library is missing (its constructor checks later)."""
    from fsdf.brokers import broker_class
    from fsdf.exceptions import BrokerNotAvailableError
    try:
        return broker_class(kind)
    except BrokerNotAvailableError:
        return None
