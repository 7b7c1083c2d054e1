package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockObserver;
import dev.pglock.core.PgLock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.DisposableBean;
import org.springframework.context.SmartLifecycle;

/**
 * The lock clients of the application, one per mode, built from {@code pglock.*} when first needed:
 * the configured mode's at start-up, the other only if a {@code @DistributedLock(mode = ...)} or
 * {@code LockTemplate.inMode(...)} asks for it.
 *
 * <p>A lifecycle bean: when the context closes it stops them gracefully (see
 * {@link LockClient#close(Duration)}). They stop granting at once; the locks still held by running
 * work (a locked method, a {@code LockTemplate} callback, a {@code @Scheduled} job) stay held until
 * that work releases them, within {@code spring.lifecycle.timeout-per-shutdown-phase}; a lock still
 * held after that is reported lost to its holder ({@code onLost}, {@code assertHeld()} throws) before
 * it is released. So a rolling deploy never lets another replica in under work that still runs.
 * Its phase, {@link #PHASE}, comes after every other component's stop (the web server's graceful
 * shutdown, schedulers, listener containers, plain lifecycle beans), so work they let finish, or do
 * while they stop, can still take locks. Stopping is final: the clients are closed, and a context
 * that is stopped and then started again (rather than refreshed) keeps them closed.
 */
public class PgLockClients implements SmartLifecycle, DisposableBean {

    /**
     * Among the last to stop (and the first to start): after everything that may still call locked
     * code while it stops, the web server's graceful shutdown ({@code DEFAULT_PHASE - 1024}) and stop
     * ({@code - 2048}), executors and schedulers ({@code DEFAULT_PHASE}), message listener containers,
     * Spring Integration's endpoints ({@code Integer.MAX_VALUE / 2} and 0) and plain {@code Lifecycle}
     * beans (0). Nothing it needs stops before it: the DataSource is not a lifecycle bean (but for
     * Spring Boot's CRaC checkpoint support, which at phase 0 may suspend a Hikari pool before a
     * checkpoint; lock sessions already hold their connections, and every borrow is bounded).
     */
    public static final int PHASE = Integer.MIN_VALUE + 4096;

    private static final Logger log = LoggerFactory.getLogger(PgLockClients.class);

    private final PgLockProperties properties;
    private final DataSource dataSource;
    private final Map<LockMode, LockClient> clients = new ConcurrentHashMap<>();
    /** How long stopping waits for running work to release its locks. */
    private final Duration shutdownTimeout;
    private volatile boolean closed;
    private volatile boolean running;
    private volatile LockObserver observer = LockObserver.NONE;
    private final List<Consumer<LockClient>> builtListeners = new java.util.concurrent.CopyOnWriteArrayList<>();

    /** Clients that close at once when the context closes (no grace period). */
    public PgLockClients(PgLockProperties properties, DataSource dataSource) {
        this(properties, dataSource, Duration.ZERO);
    }

    /**
     * Clients that, when the context closes, wait up to {@code shutdownTimeout} for running work to
     * release its locks (the auto-configuration passes 90% of
     * {@code spring.lifecycle.timeout-per-shutdown-phase}, so the phase ends in time).
     */
    public PgLockClients(PgLockProperties properties, DataSource dataSource, Duration shutdownTimeout) {
        this.properties = properties;
        this.dataSource = dataSource;
        this.shutdownTimeout = shutdownTimeout;
    }

    /**
     * What every client built from now on tells about its acquisitions, held sections, heartbeats and
     * losses; the auto-configuration combines the application's {@link LockObserver} beans here.
     */
    public PgLockClients observer(LockObserver observer) {
        this.observer = java.util.Objects.requireNonNull(observer, "observer must not be null");
        return this;
    }

    /** Runs {@code listener} for each client built, those built already included (metrics bind gauges so). */
    public void onClientBuilt(Consumer<LockClient> listener) {
        synchronized (clients) {
            builtListeners.add(listener);
            clients.values().forEach(listener);
        }
    }

    /** The clients built so far, without building any: for health checks and the Actuator endpoint. */
    public List<LockClient> built() {
        synchronized (clients) {
            return List.copyOf(clients.values());
        }
    }

    /** The DataSource the clients lock on. */
    public DataSource dataSource() {
        return dataSource;
    }

    /**
     * The client for {@code mode}, built on first use.
     *
     * @throws IllegalStateException once the application context is closing
     */
    public LockClient get(LockMode mode) {
        synchronized (clients) { // never builds a client that closing would miss
            if (closed) {
                throw new IllegalStateException("the application context is closing: no new " + mode + " lock client");
            }
            LockClient existing = clients.get(mode);
            if (existing != null) {
                return existing;
            }
            LockClient client = build(mode);
            clients.put(mode, client);
            builtListeners.forEach(listener -> listener.accept(client));
            return client;
        }
    }

    private LockClient build(LockMode mode) {
        LockClient client = create(mode);
        // One line a newcomer can check against what they meant to configure.
        log.info("pglock: {} mode, namespace '{}', owner '{}', {}lock sessions {}, heartbeat {}, on {}",
                mode.name().toLowerCase(), properties.getNamespace(), client.owner(),
                mode == LockMode.LEASE ? "table " + properties.getTable().getName() + " (initialize-schema "
                        + properties.getTable().getInitializeSchema().name().toLowerCase() + "), lease "
                        + properties.getLease() + ", " : "",
                properties.getLockSessions(), properties.getHeartbeatInterval(), describe(dataSource));
        return client;
    }

    /** The DataSource as a log line: its pool's URL when it says, else its type. */
    static String describe(DataSource dataSource) {
        String type = dataSource.getClass().getSimpleName();
        try {
            java.lang.reflect.Method url = dataSource.getClass().getMethod("getJdbcUrl");
            Object value = url.invoke(dataSource);
            return value != null ? type + " " + value : type;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return type;
        }
    }

    private LockClient create(LockMode mode) {
        String owner = properties.getOwner();
        return switch (mode) {
            case ADVISORY -> withOwner(PgLock.advisory(dataSource), owner)
                    .observer(observer)
                    .namespace(properties.getNamespace())
                    .lockSessions(properties.getLockSessions())
                    .connectionWaitTimeout(properties.getConnectionWaitTimeout())
                    .heartbeatInterval(properties.getHeartbeatInterval())
                    .fencingTokens(properties.getAdvisory().isFencingTokens())
                    .build();
            case LEASE -> withOwner(PgLock.lease(dataSource), owner)
                    .observer(observer)
                    .namespace(properties.getNamespace())
                    .tableName(properties.getTable().getName())
                    .initializeSchema(properties.getTable().getInitializeSchema() == PgLockProperties.InitializeSchema.ALWAYS)
                    .lease(properties.getLease())
                    .heartbeatInterval(properties.getHeartbeatInterval())
                    .lockSessions(properties.getLockSessions())
                    .waitLines(properties.getWaitLines())
                    .connectionWaitTimeout(properties.getConnectionWaitTimeout())
                    .asyncReleaseCommit(properties.getTable().isAsyncReleaseCommit())
                    .build();
        };
    }

    private static dev.pglock.core.advisory.AdvisoryLockClientBuilder withOwner(
            dev.pglock.core.advisory.AdvisoryLockClientBuilder builder, String owner) {
        return owner == null || owner.isBlank() ? builder : builder.owner(owner);
    }

    private static dev.pglock.core.lease.LeaseLockClientBuilder withOwner(
            dev.pglock.core.lease.LeaseLockClientBuilder builder, String owner) {
        return owner == null || owner.isBlank() ? builder : builder.owner(owner);
    }

    @Override
    public void start() {
        running = true;
    }

    @Override
    public boolean isRunning() {
        return running;
    }

    @Override
    public int getPhase() {
        return PHASE;
    }

    /** Stops the clients gracefully on a thread of its own, so other beans of the phase stop meanwhile. */
    @Override
    public void stop(Runnable callback) {
        running = false;
        Thread stopping = new Thread(() -> {
            try {
                closeAll(shutdownTimeout);
            } finally {
                callback.run();
            }
        }, "pglock-shutdown");
        stopping.setDaemon(true);
        stopping.start();
    }

    @Override
    public void stop() {
        running = false;
        closeAll(shutdownTimeout);
    }

    /** Closes whatever stopping left open (nothing, unless the context never started), at once. */
    @Override
    public void destroy() {
        closeAll(Duration.ZERO);
    }

    /** Closes every client at once, each on a thread of its own: they stop granting together and share the timeout. */
    private void closeAll(Duration timeout) {
        List<LockClient> toClose;
        synchronized (clients) {
            closed = true;
            toClose = List.copyOf(clients.values());
            clients.clear();
        }
        List<Thread> closing = new ArrayList<>();
        for (LockClient client : toClose) {
            Thread thread = new Thread(() -> {
                try {
                    client.close(timeout);
                } catch (RuntimeException e) {
                    log.warn("closing the {} lock client failed", client.mode(), e);
                }
            }, "pglock-close-" + client.mode().name().toLowerCase());
            thread.start();
            closing.add(thread);
        }
        for (Thread thread : closing) {
            try {
                thread.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }
}
