"""fsdf connection settings for this project.

fsdf wrote this file on its first import because the project had none. Edit the values here;
environment variables ``FSDF_<NAME>`` override them, and ``fsdf.patch_frame_config(NAME=...)``
overrides both. Set ``FSDF_CONFIG_FILE=0`` to stop fsdf from writing or reading this file.
"""
from fsdf.enums import BrokerEnum

# Broker used by tasks that do not pass broker_kind. PERSISTQUEUE (SQLite) needs no server.
DEFAULT_BROKER_KIND = BrokerEnum.PERSISTQUEUE

# SQLite files of the PERSISTQUEUE broker, one per queue.
PERSIST_QUEUE_PATH = '~/.fsdf/persist_queue'

# Redis: either a URL or the separate fields (the URL wins when set).
REDIS_URL = ''
REDIS_HOST = '127.0.0.1'
REDIS_PORT = 6379
REDIS_DB = 0
REDIS_PASSWORD = ''

RABBITMQ_URL = 'amqp://guest:guest@127.0.0.1:5672/'
KAFKA_BOOTSTRAP_SERVERS = '127.0.0.1:9092'
MONGO_CONNECT_URL = 'mongodb://127.0.0.1:27017'

# The SQLACHEMY broker's database, a SQLAlchemy URL: postgresql+psycopg://user:pw@host/db,
# mysql+pymysql://user:pw@host/db (MariaDB 10.6+, MySQL 8+) or sqlite:///path; '' is the SQLite file
# PERSIST_QUEUE_PATH/fsdf_sql_queues.sqlite.
SQLACHEMY_ENGINE_URL = ''

# The NATS broker's server (JetStream enabled): nats://host:port, or nats://user:pw@host:port.
NATS_URL = 'nats://127.0.0.1:4222'

# The ZEROMQ broker: a queue whose name is a port number is tcp://ZEROMQ_HOST:<port> (its consumer binds
# there, publishers connect); other names are ipc sockets in PERSIST_QUEUE_PATH/zeromq/. Only widen this
# beyond 127.0.0.1 on a network you trust: ZeroMQ has no authentication here.
ZEROMQ_HOST = '127.0.0.1'

# The KOMBU broker: a kombu URL, redis://host:port/db or amqp://user:pw@host:port/vhost, and kombu's
# transport_options as a JSON object text (e.g. '{"visibility_timeout": 60}'; '' is fsdf's defaults).
KOMBU_URL = 'redis://127.0.0.1:6379/0'
KOMBU_TRANSPORT_OPTIONS = ''

# The run store: run records (tasks with run_records=True), statistics, the registry of queues and
# consumers, pause flags. sqlite:///path (one machine) or mongodb://... (many machines);
# empty: sqlite:///<PERSIST_QUEUE_PATH>/fsdf_runs.sqlite.
RESULT_STORE_URL = ''

# Per-queue counters in the run store, consumer registry, pause/resume and the minute speed line.
RUN_STATISTICS = True

# How often (seconds) each consumer logs its queue's speed, waiting messages and time left.
RUN_STATS_LOG_SECONDS = 60

# Folder of the rotating log files written for tasks with create_logger_file=True.
LOG_PATH = '~/.fsdf/logs'

# On SIGINT/SIGTERM, how long running calls may take to finish before the process exits.
SHUTDOWN_GRACE_SECONDS = 30

# How long a publish keeps retrying (with backoff) while its broker is unreachable, then raises; 0: at once.
PUBLISH_RETRY_SECONDS = 5

# How long a publish keeps retrying (with backoff) while its broker is unreachable, then raises; 0: at once.
PUBLISH_RETRY_SECONDS = 5

# Threads of calls blocked in C past their function_timeout that fsdf abandons (the worker moves on) at most;
# beyond it a worker waits for its stuck call, and a warning says so.
FUNCTION_TIMEOUT_MAX_ABANDONED = 100
