package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockMode;
import java.time.Duration;
import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.core.Ordered;

/**
 * pglock settings, under {@code pglock.*}. Checked when the application starts: a bad value fails the
 * start with the property's name and value, and so does a name that is not one of these (a typo
 * such as {@code pglock.mdoe}), with the closest real name.
 */
@ConfigurationProperties(prefix = "pglock", ignoreUnknownFields = false)
public class PgLockProperties {

    /** Whether pglock is on: the lock client, LockTemplate and the @DistributedLock aspect. */
    private boolean enabled = true;

    /**
     * Where locks are kept: advisory (session-level advisory locks: no table, no writes; needs a
     * direct connection, not PgBouncer in transaction mode) or lease (a lease table with heartbeats;
     * works through PgBouncer, stores data, expires by the database clock).
     */
    private LockMode mode = LockMode.ADVISORY;

    /** Mixed into every key, so services sharing a database never share a lock by accident. Replicas of one service must agree on it. */
    private String namespace = "";

    /**
     * How long a locked call waits for its lock by default; 0 tries once and throws (or skips) when it
     * is taken. Applies to @DistributedLock methods that are not @Scheduled and to LockTemplate;
     * @Scheduled methods use pglock.scheduled.wait.
     */
    private Duration wait = Duration.ZERO;

    /**
     * How long a lease-mode lock outlives its holder's last heartbeat: after a crash (kill -9, a lost
     * machine) the next holder gets it at most this long after the last heartbeat. Must be longer
     * than twice the heartbeat interval; three times or more survives a missed heartbeat.
     */
    private Duration lease = Duration.ofSeconds(10);

    /**
     * The shortest time a lock stays taken after acquisition by default, even when the call returns
     * sooner. Applies like pglock.wait; @Scheduled methods use pglock.scheduled.hold-at-least.
     */
    private Duration holdAtLeast = Duration.ZERO;

    /** How often lease-mode locks are renewed, and advisory lock sessions checked. */
    private Duration heartbeatInterval = Duration.ofSeconds(2);

    /**
     * Who this replica is, as written with its locks and shown by list(), get() and the start-up log
     * line (a random suffix keeps it unique per client). Advisory mode shows other replicas' locks by
     * backend pid and application_name. Default: the host, the process id and a random part.
     */
    private String owner;

    /**
     * The most lock sessions (connections) each lock client opens for its statements and, in advisory
     * mode, the locks taken without waiting (1 to 64). They open as concurrent callers need them and go
     * back to the pool when idle and holding nothing.
     */
    private int lockSessions = 8;

    /**
     * Lease mode: how many callers of each lock client may wait in wait lines at once (0 to 16), each
     * on a connection of its own, so that a release wakes one waiting replica instead of all of them.
     * Other waiters share one LISTEN connection. Count them when sizing the pool.
     */
    private int waitLines = 2;

    /** The longest wait for a connection from the DataSource before failing with "pool exhausted". */
    private Duration connectionWaitTimeout = Duration.ofSeconds(5);

    /**
     * The order of the @DistributedLock advice. The default is just outside @Transactional's (which
     * is the lowest precedence), so a lock is taken before the transaction begins and released after
     * it ends. A smaller number nests the lock further outside other advice.
     */
    private int aspectOrder = Ordered.LOWEST_PRECEDENCE - 1;

    private final Advisory advisory = new Advisory();

    private final Metrics metrics = new Metrics();

    private final Adapters adapters = new Adapters();

    private final Leader leader = new Leader();

    private final Scheduled scheduled = new Scheduled();

    private final Table table = new Table();

    public boolean isEnabled() {
        return enabled;
    }

    public void setEnabled(boolean enabled) {
        this.enabled = enabled;
    }

    public LockMode getMode() {
        return mode;
    }

    public void setMode(LockMode mode) {
        this.mode = mode;
    }

    public String getNamespace() {
        return namespace;
    }

    public void setNamespace(String namespace) {
        this.namespace = namespace;
    }

    public Duration getWait() {
        return wait;
    }

    public void setWait(Duration wait) {
        this.wait = wait;
    }

    public Duration getLease() {
        return lease;
    }

    public void setLease(Duration lease) {
        this.lease = lease;
    }

    public Duration getHoldAtLeast() {
        return holdAtLeast;
    }

    public void setHoldAtLeast(Duration holdAtLeast) {
        this.holdAtLeast = holdAtLeast;
    }

    public Duration getHeartbeatInterval() {
        return heartbeatInterval;
    }

    public void setHeartbeatInterval(Duration heartbeatInterval) {
        this.heartbeatInterval = heartbeatInterval;
    }

    public int getWaitLines() {
        return waitLines;
    }

    public void setWaitLines(int waitLines) {
        this.waitLines = waitLines;
    }

    public int getLockSessions() {
        return lockSessions;
    }

    public void setLockSessions(int lockSessions) {
        this.lockSessions = lockSessions;
    }

    public Duration getConnectionWaitTimeout() {
        return connectionWaitTimeout;
    }

    public void setConnectionWaitTimeout(Duration connectionWaitTimeout) {
        this.connectionWaitTimeout = connectionWaitTimeout;
    }

    public int getAspectOrder() {
        return aspectOrder;
    }

    public void setAspectOrder(int aspectOrder) {
        this.aspectOrder = aspectOrder;
    }

    public Advisory getAdvisory() {
        return advisory;
    }

    public Metrics getMetrics() {
        return metrics;
    }

    public Adapters getAdapters() {
        return adapters;
    }

    public Leader getLeader() {
        return leader;
    }

    /** Leader election: this application stands as a candidate when a key is set. */
    public static class Leader {

        /** The key whose holder leads; unset: no leader election. */
        private String key;

        /** What the leader advertises with its lock in lease mode (say, its address), readable with LockClient.get. */
        private String data;

        public String getKey() {
            return key;
        }

        public void setKey(String key) {
            this.key = key;
        }

        public String getData() {
            return data;
        }

        public void setData(String data) {
            this.data = data;
        }
    }

    /** Drop-in adapters for ShedLock and Spring Integration users (when those are on the classpath). */
    public static class Adapters {

        private final Toggle shedlock = new Toggle();

        private final Toggle springIntegration = new Toggle();

        /** A ShedLock LockProvider backed by pglock, unless the application defines one. */
        public Toggle getShedlock() {
            return shedlock;
        }

        /** A Spring Integration LockRegistry backed by pglock, unless the application defines one. */
        public Toggle getSpringIntegration() {
            return springIntegration;
        }
    }

    /** An adapter switched on or off. */
    public static class Toggle {

        /** Whether the adapter is registered. */
        private boolean enabled = true;

        public boolean isEnabled() {
            return enabled;
        }

        public void setEnabled(boolean enabled) {
            this.enabled = enabled;
        }
    }

    /** Micrometer metrics and observations (when Micrometer is on the classpath). */
    public static class Metrics {

        /** Whether pglock records its meters and observations (pglock.acquire, pglock.held, pglock.lost, ...). */
        private boolean enabled = true;

        public boolean isEnabled() {
            return enabled;
        }

        public void setEnabled(boolean enabled) {
            this.enabled = enabled;
        }
    }

    public Table getTable() {
        return table;
    }

    public Scheduled getScheduled() {
        return scheduled;
    }

    public String getOwner() {
        return owner;
    }

    public void setOwner(String owner) {
        this.owner = owner;
    }

    /**
     * Defaults of @DistributedLock methods that are also @Scheduled: every replica's scheduler fires,
     * one runs and the others skip, so they neither wait nor use the defaults meant for service calls.
     */
    public static class Scheduled {

        /** How long a @Scheduled locked method waits for its lock (0: the other replicas skip at once). */
        private Duration wait = Duration.ZERO;

        /** The shortest time a @Scheduled method's lock stays taken, so a fast job does not run twice in one tick. */
        private Duration holdAtLeast = Duration.ZERO;

        public Duration getWait() {
            return wait;
        }

        public void setWait(Duration wait) {
            this.wait = wait;
        }

        public Duration getHoldAtLeast() {
            return holdAtLeast;
        }

        public void setHoldAtLeast(Duration holdAtLeast) {
            this.holdAtLeast = holdAtLeast;
        }
    }

    /** Advisory-mode settings. */
    public static class Advisory {

        /** Whether each advisory acquisition draws a fencing token from a sequence (created if missing). */
        private boolean fencingTokens = false;

        public boolean isFencingTokens() {
            return fencingTokens;
        }

        public void setFencingTokens(boolean fencingTokens) {
            this.fencingTokens = fencingTokens;
        }
    }

    /** The lease table (lease mode). */
    public static class Table {

        /** The lease table's name: a lowercase identifier, optionally schema-qualified; its sequence is <name>_fencing_seq. */
        private String name = "pglock_locks";

        /** Whether pglock creates the table and its sequence when they are missing (always), or only checks they exist (never). */
        private InitializeSchema initializeSchema = InitializeSchema.ALWAYS;

        /**
         * Whether a release commits without waiting for its disk flush (synchronous_commit off for that
         * statement only): faster releases and hand-offs, but a release lost in a server crash keeps its
         * lock taken until the lease ends. Acquisitions and heartbeats always wait for the flush.
         */
        private boolean asyncReleaseCommit = false;

        public String getName() {
            return name;
        }

        public void setName(String name) {
            this.name = name;
        }

        public InitializeSchema getInitializeSchema() {
            return initializeSchema;
        }

        public void setInitializeSchema(InitializeSchema initializeSchema) {
            this.initializeSchema = initializeSchema;
        }

        public boolean isAsyncReleaseCommit() {
            return asyncReleaseCommit;
        }

        public void setAsyncReleaseCommit(boolean asyncReleaseCommit) {
            this.asyncReleaseCommit = asyncReleaseCommit;
        }
    }

    /** Whether pglock creates its lease table. */
    public enum InitializeSchema {
        /** Create the table and sequence when missing (safe when several replicas start at once). */
        ALWAYS,
        /** Never create them; a missing table fails the start, naming the DDL to run. */
        NEVER
    }
}
