package dev.pglock.core.lease;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockObserver;
import dev.pglock.core.internal.Checks;
import dev.pglock.core.internal.Durations;
import dev.pglock.core.internal.Identifiers;
import dev.pglock.core.internal.Owners;
import java.time.Duration;
import java.util.Objects;
import javax.sql.DataSource;

/**
 * Builds a lease-table lock client; start with {@code PgLock.lease(dataSource)}. Every setter checks
 * its value at once; {@link #build()} checks how they combine.
 */
public final class LeaseLockClientBuilder {

    /** Default table name. */
    public static final String DEFAULT_TABLE = "pglock_locks";
    /** Default lease: how long a lock outlives its holder's last heartbeat. */
    public static final Duration DEFAULT_LEASE = Duration.ofSeconds(10);
    /** Default heartbeat interval. */
    public static final Duration DEFAULT_HEARTBEAT_INTERVAL = Duration.ofSeconds(2);
    /** Default upper bound on the sessions the client runs its statements on: they open as concurrent callers need them. */
    public static final int DEFAULT_LOCK_SESSIONS = 8;
    /** Default bound on callers of one client waiting in wait lines at once (see {@link #waitLines}). */
    public static final int DEFAULT_WAIT_LINES = 2;
    /** Default bound on waiting for a pooled connection. */
    public static final Duration DEFAULT_CONNECTION_WAIT_TIMEOUT = Duration.ofSeconds(5);
    /** Where the table's DDL is in the jar, for Flyway or Liquibase. */
    public static final String SCHEMA_RESOURCE = LeaseSchema.RESOURCE;

    private LockObserver observer = LockObserver.NONE;
    private final DataSource dataSource;
    private DataSource listenDataSource;
    private String namespace = "";
    private String table = DEFAULT_TABLE;
    private boolean initializeSchema = true;
    private Duration lease = DEFAULT_LEASE;
    private Duration heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL;
    private int lockSessions = DEFAULT_LOCK_SESSIONS;
    private int waitLines = DEFAULT_WAIT_LINES;
    private Duration connectionWaitTimeout = DEFAULT_CONNECTION_WAIT_TIMEOUT;
    private boolean asyncReleaseCommit;
    private String owner;

    /** Use {@code PgLock.lease(dataSource)}. */
    public LeaseLockClientBuilder(DataSource dataSource) {
        this.dataSource = Objects.requireNonNull(dataSource, "dataSource must not be null");
    }

    /**
     * Where waiters LISTEN for releases and queue in wait lines (default: the main DataSource). It
     * lends one connection to each caller in a wait line (see {@link #waitLines}), and one shared by
     * the other waiters while there are any. Behind PgBouncer in transaction pooling, point this at PostgreSQL directly
     * (or at a session-pooling PgBouncer): these need real sessions; everything else works through
     * the transaction pool.
     */
    public LeaseLockClientBuilder listenDataSource(DataSource listenDataSource) {
        this.listenDataSource = Objects.requireNonNull(listenDataSource, "listenDataSource must not be null");
        return this;
    }

    /** Keeps services that share the table apart (default empty). Replicas of one service must agree on it. */
    public LeaseLockClientBuilder namespace(String namespace) {
        this.namespace = Checks.namespace(namespace);
        return this;
    }

    /**
     * The lease table (default {@value #DEFAULT_TABLE}): a lowercase identifier, optionally
     * schema-qualified, at most 51 characters so its sequence name {@code <table>_fencing_seq} fits.
     */
    public LeaseLockClientBuilder tableName(String table) {
        Identifiers.quoted("tableName", table);
        if (table.substring(table.indexOf('.') + 1).length() > 51) {
            throw new IllegalArgumentException("tableName must be at most 51 characters (its sequence adds"
                    + " _fencing_seq), got '" + table + "'");
        }
        this.table = table;
        return this;
    }

    /** Whether to create the table and sequence when missing (default true); when false a missing table fails the build. */
    public LeaseLockClientBuilder initializeSchema(boolean initializeSchema) {
        this.initializeSchema = initializeSchema;
        return this;
    }

    /** The default lease of a lock (default 10s, like Spring Integration's lock TTL: a crashed holder's lock is free again at most 10 s after its last heartbeat); must be longer than twice the heartbeat interval. */
    public LeaseLockClientBuilder lease(Duration lease) {
        this.lease = Checks.span("lease", lease);
        return this;
    }

    /** How often one statement renews every lock the client holds (default 2s). */
    public LeaseLockClientBuilder heartbeatInterval(Duration interval) {
        this.heartbeatInterval = Checks.span("heartbeatInterval", interval);
        return this;
    }

    /**
     * The most sessions that run the client's statements at once (1 to 64, default 8). One is open
     * while the client is; more open only while that many callers run statements at the same moment,
     * and each extra one goes back to the pool once idle for a heartbeat (at least a second). Locks
     * live in rows, not sessions, so none is ever kept for a lock.
     */
    public LeaseLockClientBuilder lockSessions(int lockSessions) {
        this.lockSessions = Checks.between("lockSessions", lockSessions, 1, 64);
        return this;
    }

    /**
     * How many callers of this client may wait in wait lines at once (0 – 16, default 2). A caller
     * waiting a second or more for an exclusive lock queues, on a connection of its own from the
     * LISTEN DataSource, in the key's line in PostgreSQL, so that a release wakes only the first client
     * in line instead of every client waiting for the key. The other waiters, and all of them with 0,
     * share the one LISTEN connection. Each line holds its connection for its caller's whole wait:
     * count them when sizing the pool.
     */
    public LeaseLockClientBuilder waitLines(int waitLines) {
        this.waitLines = Checks.between("waitLines", waitLines, 0, 16);
        return this;
    }

    /** The longest wait for a connection from the DataSource (default 5s). */
    public LeaseLockClientBuilder connectionWaitTimeout(Duration timeout) {
        // a longer one (ChronoUnit.FOREVER, say) means "ever", as a wait does
        this.connectionWaitTimeout = Durations.atMostLongest(Checks.positive("connectionWaitTimeout", timeout));
        return this;
    }

    /**
     * Whether a release commits without waiting for PostgreSQL to flush it to disk (default false:
     * every statement waits, as {@code synchronous_commit} says). Turned on, a release costs about
     * one disk flush less and a waiter gets the lock that much sooner; acquisitions and heartbeats
     * stay durable, so two holders are never let in. The cost: when the server crashes (or fails
     * over to a standby) within a moment of a release, up to three times {@code wal_writer_delay}
     * (600 ms by default), that release may be lost, and the lock then stays taken until its lease
     * ends, as if its holder had crashed.
     */
    public LeaseLockClientBuilder asyncReleaseCommit(boolean asyncReleaseCommit) {
        this.asyncReleaseCommit = asyncReleaseCommit;
        return this;
    }

    /**
     * A readable name for the owner identity written into the rows, such as the pod name; a random
     * suffix is appended for each client built, so it stays unique per client, clients one builder
     * built included (default {@code host:pid:random}).
     */
    public LeaseLockClientBuilder owner(String owner) {
        this.owner = Owners.checkedName(owner);
        return this;
    }

    /**
     * What hears every acquisition, held section, heartbeat and lost lock of the client, for metrics
     * and tracing (default {@link LockObserver#NONE}). The Spring Boot starter sets one that feeds
     * Micrometer.
     */
    public LeaseLockClientBuilder observer(LockObserver observer) {
        this.observer = java.util.Objects.requireNonNull(observer, "observer must not be null");
        return this;
    }

    /**
     * Checks the settings fit together and the DataSource is PostgreSQL, creates (or checks) the
     * table, starts the heartbeat, and returns the client.
     *
     * @throws IllegalArgumentException for settings that do not fit, or a DataSource that is not PostgreSQL
     * @throws IllegalStateException when the table is missing and initializeSchema is false
     * @throws dev.pglock.core.LockDatabaseException when the database cannot be reached
     */
    public LockClient build() {
        if (lease.compareTo(heartbeatInterval.multipliedBy(2)) <= 0) {
            throw new IllegalArgumentException("lease (" + lease + ") must be longer than twice heartbeatInterval ("
                    + heartbeatInterval + "): a holder stops trusting a lock half a heartbeat before its lease ends,"
                    + " so a shorter lease would be lost between two heartbeats; three times or more survives a"
                    + " missed heartbeat");
        }
        LeaseLockClient client = new LeaseLockClient(dataSource, listenDataSource == null ? dataSource : listenDataSource,
                namespace, table, Identifiers.quoted("tableName", table),
                Identifiers.quoted("tableName", table + "_fencing_seq"), initializeSchema, lease, heartbeatInterval,
                lockSessions, waitLines, connectionWaitTimeout, asyncReleaseCommit,
                Owners.forClient(owner));
        client.observeWith(observer);
        try {
            client.start();
        } catch (RuntimeException e) {
            client.close();
            throw e;
        }
        return client;
    }
}
