package dev.pglock.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.advisory.AdvisoryKeyHasher;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Callers on virtual threads (Java 21+). There, an interrupt closes a socket that the thread is
 * reading or about to read (JEP 444), and pgjdbc's connection with it: an interrupt must cost no
 * one else's lock (both modes run several callers' statements on one connection), and a caller
 * that carries one must get what a platform thread gets. Runs in its own surefire execution on a
 * JDK 21 or newer, by its tag (see pglock-core's pom); compiled for Java 17, so it makes its threads by
 * reflection.
 */
@org.junit.jupiter.api.Tag("virtual-threads")
class VirtualThreadCallersTest {

    private final PgTestDatabase db = PgTestDatabase.get();
    private final String namespace = PgTestDatabase.uniqueName("virtual");
    private final String table = PgTestDatabase.uniqueName("pglock_virtual");
    private final List<AutoCloseable> toClose = new ArrayList<>();
    private final HikariDataSource pool = closeLater(db.pooledDataSource(16));
    private final ExecutorService platform = Executors.newCachedThreadPool();
    private final ExecutorService virtual = newVirtualThreadPerTaskExecutor();

    @BeforeAll
    static void onAJdkWithVirtualThreads() {
        assertThat(Runtime.version().feature())
                .as("this test runs on a JDK 21 or newer (surefire's jvm, see pglock-core's pom); it ran on %s",
                        System.getProperty("java.home"))
                .isGreaterThanOrEqualTo(21);
    }

    @AfterEach
    void closeAll() throws Exception {
        platform.shutdownNow();
        virtual.shutdownNow();
        for (AutoCloseable c : toClose) {
            c.close();
        }
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    private <T extends AutoCloseable> T closeLater(T closeable) {
        toClose.add(0, closeable);
        return closeable;
    }

    private LockClient client(String mode) {
        return closeLater(mode.equals("advisory")
                ? PgLock.advisory(pool).namespace(namespace).fencingTokens(true).build()
                : PgLock.lease(pool).tableName(table).lease(Duration.ofSeconds(30)).build());
    }

    private static ExecutorService newVirtualThreadPerTaskExecutor() {
        try {
            return (ExecutorService) Executors.class.getMethod("newVirtualThreadPerTaskExecutor").invoke(null);
        } catch (ReflectiveOperationException e) {
            return null; // a JDK before 21: onAJdkWithVirtualThreads says so
        }
    }

    private static <T> T onVirtualThread(ExecutorService virtual, Callable<T> task) throws Exception {
        return virtual.submit(() -> {
            assertThat(Thread.class.getMethod("isVirtual").invoke(Thread.currentThread())).isEqualTo(true);
            return task.call();
        }).get(30, TimeUnit.SECONDS);
    }

    /**
     * A virtual thread that carries an interrupt (a cancelled task's {@code finally}, an interrupt
     * caught and restored) takes and releases a lock. Before, its first statement closed the
     * connection under it: in advisory mode that was the lock session every lock taken without
     * waiting shares, so the server dropped another caller's lock; in lease mode its own acquire
     * failed, and its release too, so its row stayed taken until the lease ran out.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void aCallerThatCarriesAnInterruptCostsNoOtherCallerItsLockAndGetsItsOwn(String mode) throws Exception {
        LockClient client = client(mode);
        LockClient other = client(mode);
        List<LockLostException> heard = new CopyOnWriteArrayList<>();
        HeldLock bystander = platform.submit(() -> client.tryAcquire(LockRequest.of("bystander")).orElseThrow())
                .get(30, TimeUnit.SECONDS);
        bystander.onLost(heard::add);

        List<Object> seen = onVirtualThread(virtual, () -> {
            Thread.currentThread().interrupt();
            HeldLock mine = client.tryAcquire(LockRequest.of("mine")).orElseThrow();
            boolean stillInterrupted = Thread.currentThread().isInterrupted();
            boolean released = mine.release();
            return List.of(stillInterrupted, released, Thread.interrupted());
        });

        assertThat(seen).as("interrupt kept after the acquire, released, interrupt kept after the release")
                .containsExactly(true, true, true);
        assertThat(other.tryAcquire(LockRequest.of("mine"))).as("the release reached the database").isPresent();
        assertThat(other.tryAcquire(LockRequest.of("bystander"))).as("the bystander's lock is still held").isEmpty();
        assertThat(bystander.isHeld()).isTrue();
        assertThat(heard).isEmpty();
    }

    /**
     * The interrupt comes while the virtual thread's statement is on its way (the network held back
     * by a paused proxy), as {@code Future.cancel(true)} or {@code shutdownNow()} sends it. Before,
     * it closed the connection: the shared advisory lock session with every lock on it, the lease
     * statement's pooled connection with the caller's acquire.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void anInterruptDuringAStatementCostsNoOtherCallerItsLockAndTheCallerGetsItsOwn(String mode) throws Exception {
        dev.pglock.test.TcpProxy proxy = closeLater(dev.pglock.test.TcpProxy.forJdbcUrl(db.jdbcUrl()));
        HikariDataSource proxied = closeLater(db.pooledDataSource(proxy, 16));
        LockClient client = closeLater(mode.equals("advisory")
                ? PgLock.advisory(proxied).namespace(namespace).build()
                : PgLock.lease(proxied).tableName(table).lease(Duration.ofSeconds(30)).build());
        LockClient other = client(mode);
        HeldLock bystander = platform.submit(() -> client.tryAcquire(LockRequest.of("bystander")).orElseThrow())
                .get(30, TimeUnit.SECONDS);
        List<LockLostException> heard = new CopyOnWriteArrayList<>();
        bystander.onLost(heard::add);

        java.util.concurrent.atomic.AtomicReference<Thread> caller = new java.util.concurrent.atomic.AtomicReference<>();
        proxy.setPaused(true);
        Future<List<Object>> call = virtual.submit(() -> {
            caller.set(Thread.currentThread());
            HeldLock mine = client.tryAcquire(LockRequest.of("mine")).orElseThrow();
            boolean interrupted = Thread.interrupted();
            return List.of(interrupted, mine.release());
        });
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.stalledTransfers() > 0);
        caller.get().interrupt();
        proxy.setPaused(false);

        assertThat(call.get(30, TimeUnit.SECONDS)).as("interrupt kept after the acquire, released")
                .containsExactly(true, true);
        assertThat(other.tryAcquire(LockRequest.of("mine"))).as("the release reached the database").isPresent();
        assertThat(other.tryAcquire(LockRequest.of("bystander"))).as("the bystander's lock is still held").isEmpty();
        assertThat(bystander.isHeld()).isTrue();
        assertThat(heard).isEmpty();
    }

    /**
     * {@code close()} from a virtual thread that carries an interrupt (a stopping executor's task)
     * while another caller waits in the server: the wait is cancelled there, so its backend leaves
     * PostgreSQL's lock queue. The cancel opens a socket of its own, which close() now does on a
     * platform thread: over a network, where connecting parks the thread, an interrupted virtual
     * thread's connect fails and pgjdbc drops the cancel unseen. On loopback the connect does not
     * park, so this passed before that change too: it guards the behaviour, it does not force the case.
     */
    @Test
    void closeOnAnInterruptedVirtualThreadCancelsAWaitInTheServer() throws Exception {
        LockClient holderClient = client("advisory");
        LockClient waiterClient = PgLock.advisory(pool).namespace(namespace).build(); // closed by the test
        long lockId = new AdvisoryKeyHasher(namespace).lockId("queued");
        HeldLock held = holderClient.tryAcquire(LockRequest.of("queued")).orElseThrow();
        Future<?> waiting = platform.submit(() -> waiterClient.acquire(
                LockRequest.of("queued").waitAtMost(Duration.ofSeconds(60))));
        await().atMost(Duration.ofSeconds(10)).until(() -> db.advisoryWaiters(lockId) > 0);

        onVirtualThread(virtual, () -> {
            Thread.currentThread().interrupt();
            waiterClient.close();
            return null;
        });

        await("the waiting backend left the lock queue").atMost(Duration.ofSeconds(10))
                .until(() -> db.advisoryWaiters(lockId) == 0);
        assertThat(waiting).failsWithin(Duration.ofSeconds(10));
        assertThat(held.isHeld()).isTrue();
    }

    /**
     * A virtual thread interrupted while it waits in the server (advisory mode: blocked in
     * {@code pg_advisory_lock} on a connection of its own) ends as a platform thread does: the
     * driver does not see the interrupt, the wait goes on and gets the lock at the release, and the
     * interrupt is still set. Before, the interrupt closed its connection and the acquire failed as
     * a database error.
     */
    @Test
    void anAdvisoryWaitInterruptedOnAVirtualThreadEndsAsOnAPlatformThread() throws Exception {
        LockClient holderClient = client("advisory");
        LockClient waiterClient = client("advisory");
        long lockId = new AdvisoryKeyHasher(namespace).lockId("waited");
        assertThat(waitInterruptedThenReleased(platform, holderClient, waiterClient, lockId))
                .as("on a platform thread").isEqualTo("acquired, interrupted");
        assertThat(waitInterruptedThenReleased(virtual, holderClient, waiterClient, lockId))
                .as("on a virtual thread").isEqualTo("acquired, interrupted");
    }

    private String waitInterruptedThenReleased(ExecutorService threads, LockClient holderClient,
            LockClient waiterClient, long lockId) throws Exception {
        HeldLock held = holderClient.tryAcquire(LockRequest.of("waited")).orElseThrow();
        java.util.concurrent.atomic.AtomicReference<Thread> waiter = new java.util.concurrent.atomic.AtomicReference<>();
        Future<String> outcome = threads.submit(() -> {
            waiter.set(Thread.currentThread());
            try (HeldLock lock = waiterClient.acquire(LockRequest.of("waited").waitAtMost(Duration.ofSeconds(30)))) {
                return "acquired, " + (Thread.interrupted() ? "interrupted" : "not interrupted");
            } catch (RuntimeException e) {
                Thread.interrupted();
                return e.toString();
            }
        });
        await().atMost(Duration.ofSeconds(10)).until(() -> db.advisoryWaiters(lockId) > 0);
        waiter.get().interrupt();
        held.release();
        return outcome.get(30, TimeUnit.SECONDS);
    }
}
