package dev.pglock.core.advisory;

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
 * Builds an advisory-lock client; start with {@code PgLock.advisory(dataSource)}. Every setter
 * checks its value at once and names it in the exception when it is wrong.
 */
public final class AdvisoryLockClientBuilder {

    /** Default upper bound on shared lock sessions: they open as concurrent callers need them. */
    public static final int DEFAULT_LOCK_SESSIONS = 8;
    /** Default bound on waiting for a pooled connection. */
    public static final Duration DEFAULT_CONNECTION_WAIT_TIMEOUT = Duration.ofSeconds(5);
    /** Default interval of the watchdog that checks the lock sessions. */
    public static final Duration DEFAULT_HEARTBEAT_INTERVAL = Duration.ofSeconds(2);
    /** Default name of the fencing-token sequence, created when fencing tokens are turned on. */
    public static final String DEFAULT_FENCING_SEQUENCE = "pglock_fencing_tokens";

    private LockObserver observer = LockObserver.NONE;
    private final DataSource dataSource;
    private String namespace = "";
    private int lockSessions = DEFAULT_LOCK_SESSIONS;
    private Duration connectionWaitTimeout = DEFAULT_CONNECTION_WAIT_TIMEOUT;
    private Duration heartbeatInterval = DEFAULT_HEARTBEAT_INTERVAL;
    private String owner;
    private boolean fencingTokens;
    private String fencingSequence = DEFAULT_FENCING_SEQUENCE;

    /** Use {@code PgLock.advisory(dataSource)}. */
    public AdvisoryLockClientBuilder(DataSource dataSource) {
        this.dataSource = Objects.requireNonNull(dataSource, "dataSource must not be null");
    }

    /**
     * Mixed into every lock id, so services that share a database but not their keys never collide.
     * Default: empty. Changing it changes every id: replicas of one service must agree on it.
     */
    public AdvisoryLockClientBuilder namespace(String namespace) {
        this.namespace = AdvisoryKeyHasher.validateNamespace(namespace);
        return this;
    }

    /**
     * The most sessions that take and hold the locks taken without waiting (1 to 64, default 8). One
     * is open while the client is; more open only while that many callers take or release locks at
     * the same moment, and each extra one goes back to the pool once it holds no lock and was idle
     * for a heartbeat (at least a second). A caller that waits does so on a connection of its own;
     * after its release up to this many such connections stay claimed for half a second, for the
     * next waiting callers, before they go back to the pool.
     */
    public AdvisoryLockClientBuilder lockSessions(int lockSessions) {
        this.lockSessions = Checks.between("lockSessions", lockSessions, 1, 64);
        return this;
    }

    /** The longest wait for a connection from the DataSource before failing with "pool exhausted" (default 5s). */
    public AdvisoryLockClientBuilder connectionWaitTimeout(Duration timeout) {
        // a longer one (ChronoUnit.FOREVER, say) means "ever", as a wait does
        this.connectionWaitTimeout = Durations.atMostLongest(Checks.positive("connectionWaitTimeout", timeout));
        return this;
    }

    /** How often the watchdog checks that the lock sessions are alive (default 2s). */
    public AdvisoryLockClientBuilder heartbeatInterval(Duration interval) {
        this.heartbeatInterval = Checks.span("heartbeatInterval", interval);
        return this;
    }

    /**
     * A readable name for this client's owner identity, such as the pod name; a random suffix is
     * appended for each client built, so it stays unique per client, clients one builder built
     * included (default {@code host:pid:random}).
     */
    public AdvisoryLockClientBuilder owner(String owner) {
        this.owner = Owners.checkedName(owner);
        return this;
    }

    /**
     * Whether each acquisition draws a fencing token from a sequence (default false). When on, the
     * sequence is created at build time if missing, and the token is drawn in the same statement
     * that takes the lock, so it costs no extra round trip.
     */
    public AdvisoryLockClientBuilder fencingTokens(boolean enabled) {
        this.fencingTokens = enabled;
        return this;
    }

    /** The sequence fencing tokens come from (default {@value #DEFAULT_FENCING_SEQUENCE}); a lowercase identifier. */
    public AdvisoryLockClientBuilder fencingSequence(String name) {
        Identifiers.quoted("fencingSequence", name);
        this.fencingSequence = name;
        return this;
    }

    /**
     * What hears every acquisition, held section, heartbeat and lost lock of the client, for metrics
     * and tracing (default {@link LockObserver#NONE}). The Spring Boot starter sets one that feeds
     * Micrometer.
     */
    public AdvisoryLockClientBuilder observer(LockObserver observer) {
        this.observer = java.util.Objects.requireNonNull(observer, "observer must not be null");
        return this;
    }

    /**
     * Checks the DataSource is PostgreSQL, opens the first lock session, creates the fencing sequence
     * when asked to, and returns the client.
     *
     * @throws IllegalArgumentException when the DataSource is not PostgreSQL
     * @throws dev.pglock.core.LockDatabaseException when it cannot be reached
     */
    public LockClient build() {
        AdvisoryLockClient client = new AdvisoryLockClient(dataSource, new AdvisoryKeyHasher(namespace), lockSessions,
                connectionWaitTimeout, heartbeatInterval, Owners.forClient(owner),
                fencingTokens ? Identifiers.quoted("fencingSequence", fencingSequence) : null);
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
