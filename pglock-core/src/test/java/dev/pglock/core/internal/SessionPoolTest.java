package dev.pglock.core.internal;

import static org.assertj.core.api.Assertions.assertThat;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.test.PgTestDatabase;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Issue 16: callers that ask for a session at the same moment are spread over sessions. A session
 * handed to one caller that has not started its statement yet looked idle to the next caller, which
 * then queued behind the first on the same backend; the lease heartbeat's two workers could stay
 * paired on one session for a whole round (renewing 100,000 locks took twice as long in some runs).
 * The interleaving is forced by holding the first caller's session unused while a second thread asks.
 * A session on which the client runs a statement without handing it out (an advisory unlock, the
 * watchdog's check) is not chosen either while that statement runs.
 */
class SessionPoolTest {

    private HikariDataSource dataSource;
    private ExecutorService threads;
    private SessionPool pool;

    @BeforeEach
    void open() {
        dataSource = PgTestDatabase.get().pooledDataSource(4);
        threads = Executors.newCachedThreadPool();
    }

    @AfterEach
    void close() throws Exception {
        if (pool != null) {
            for (LockSession session : pool.drain()) {
                session.connection.close();
            }
        }
        threads.shutdownNow();
        threads.awaitTermination(10, TimeUnit.SECONDS);
        dataSource.close();
    }

    private SessionPool pool(int size) {
        return new SessionPool(dataSource, size, Duration.ofSeconds(10), Duration.ofSeconds(10), threads,
                LockSession::withPid);
    }

    @Test
    void aSessionHandedOutButNotUsedYetIsNotHandedToASecondCallerWhileAnotherCanBeOpened() throws Exception {
        pool = pool(2);
        pool.start();
        LockSession first = pool.session(); // claimed: its caller is about to run a statement on it

        LockSession second = threads.submit(pool::session).get(10, TimeUnit.SECONDS);

        assertThat(second).as("the second caller's session").isNotSameAs(first);
        assertThat(pool.live()).hasSize(2);
        first.callClaimed(c -> null);
        second.callClaimed(c -> null);
    }

    @Test
    void aSecondCallerGoesToAnIdleSessionRatherThanOneHandedOutToSomeoneElse() throws Exception {
        pool = pool(2);
        pool.start();
        LockSession a = pool.session();
        LockSession b = threads.submit(pool::session).get(10, TimeUnit.SECONDS);
        assertThat(b).isNotSameAs(a);
        b.callClaimed(c -> null); // b is idle again; a is still handed out

        LockSession next = threads.submit(pool::session).get(10, TimeUnit.SECONDS);

        assertThat(next).isSameAs(b);
        a.callClaimed(c -> null);
        next.callClaimed(c -> null);
    }

    @Test
    void aSessionRunningAStatementThatWasNotHandedOutIsNotChosenEither() throws Exception {
        pool = pool(2);
        LockSession started = pool.start();
        java.util.concurrent.CountDownLatch running = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch finish = new java.util.concurrent.CountDownLatch(1);
        // as an advisory unlock on the lock's own session, or the watchdog's check: call() takes no claim
        java.util.concurrent.Future<?> unclaimed = threads.submit(() -> started.call(c -> {
            signalThenWait(running, finish);
            return null;
        }));
        running.await(10, TimeUnit.SECONDS);

        LockSession chosen = threads.submit(pool::session).get(10, TimeUnit.SECONDS);

        assertThat(chosen).as("not queued behind the running statement").isNotSameAs(started);
        finish.countDown();
        unclaimed.get(10, TimeUnit.SECONDS);
        chosen.callClaimed(c -> null);
    }

    /**
     * A caller that finds the only idle session being looked at for retirement (the watchdog holds it
     * for a moment while it decides) waits for the decision: here the session is kept, and the caller
     * gets it. Judged busy instead, it made the caller borrow a connection for a second session,
     * which with a pool near its limit could wait out the connection timeout beside an idle session.
     */
    @Test
    void aCallerWaitsForARetirementBeingDecidedRatherThanOpeningAnotherSession() throws Exception {
        pool = pool(2);
        LockSession idle = pool.start();
        java.util.concurrent.CountDownLatch deciding = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch decide = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch lookedAgain = new java.util.concurrent.CountDownLatch(1);
        idle.whileDecidingForTests = () -> signalThenWait(deciding, decide);
        pool.lookingAgainForTests = lookedAgain::countDown;
        java.util.concurrent.Future<Boolean> retired = threads.submit(() -> idle.retireIfIdle(TimeUnit.HOURS.toNanos(1)));
        assertThat(deciding.await(10, TimeUnit.SECONDS)).isTrue();

        java.util.concurrent.Future<LockSession> chosen = threads.submit(pool::session);
        boolean waited = lookedAgain.await(5, TimeUnit.SECONDS);
        decide.countDown();

        assertThat(retired.get(10, TimeUnit.SECONDS)).as("used within the hour: kept").isFalse();
        LockSession session = chosen.get(10, TimeUnit.SECONDS);
        assertThat(waited).as("the caller looked again once the decision was made").isTrue();
        assertThat(session).as("the session that was kept").isSameAs(idle);
        assertThat(pool.live()).as("no second session opened").hasSize(1);
        session.callClaimed(c -> null);
    }

    /** Once set, the slow-to-lend pool's borrows say so ({@link #borrowing}) and wait for {@link #go}. */
    private final java.util.concurrent.atomic.AtomicBoolean armed = new java.util.concurrent.atomic.AtomicBoolean();
    private final java.util.concurrent.CountDownLatch borrowing = new java.util.concurrent.CountDownLatch(1);
    private final java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);

    /**
     * A pool of 2 whose DataSource, once {@link #armed}, is slow to lend: a pool at its limit, or a
     * database that does not answer (a 30 s connection wait timeout).
     */
    private SessionPool slowToLendPool() {
        javax.sql.DataSource slow = (javax.sql.DataSource) java.lang.reflect.Proxy.newProxyInstance(
                getClass().getClassLoader(), new Class<?>[] {javax.sql.DataSource.class}, (proxy, method, args) -> {
                    if (method.getName().equals("getConnection") && armed.get()) {
                        signalThenWait(borrowing, go);
                    }
                    try {
                        return method.invoke(dataSource, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        return new SessionPool(slow, 2, Duration.ofSeconds(30), Duration.ofSeconds(10), threads, LockSession::withPid);
    }

    /**
     * Forgetting an ended session never waits for a slot being opened. It took every slot's lock,
     * and a caller opening a session holds its slot's lock while it borrows the connection, up to the
     * connection timeout: a dedicated advisory session whose backend ended waited that long before its
     * locks were reported lost.
     */
    @Test
    void forgettingAnEndedSessionDoesNotWaitForASessionBeingOpened() throws Exception {
        pool = slowToLendPool();
        pool.start();
        LockSession busy = pool.session(); // slot 0, handed out
        LockSession ended;
        try (var c = dataSource.getConnection()) { // as a dedicated session, never in a slot
            ended = LockSession.open(c, 10_000, threads, LockSession::withPid);
            ended.end();
            armed.set(true);
            java.util.concurrent.Future<LockSession> opening = threads.submit(pool::session); // opens slot 1
            assertThat(borrowing.await(10, TimeUnit.SECONDS)).isTrue();

            java.util.concurrent.Future<?> forgetting = threads.submit(() -> pool.remove(ended));

            try {
                forgetting.get(5, TimeUnit.SECONDS); // the borrow would hold it for up to 30 s
            } finally {
                go.countDown();
            }
            opening.get(10, TimeUnit.SECONDS).callClaimed(x -> null);
        }
        busy.callClaimed(x -> null);
    }

    /** The same for the watchdog's retirement of an idle session, whose slot a caller is reopening. */
    @Test
    void retiringAnIdleSessionDoesNotWaitForItsSlotBeingReopened() throws Exception {
        pool = slowToLendPool();
        pool.start();
        LockSession first = pool.session();
        LockSession second = threads.submit(pool::session).get(10, TimeUnit.SECONDS); // slot 1
        assertThat(second).isNotSameAs(first);
        second.callClaimed(x -> null); // idle; slot 0 stays handed out
        java.util.concurrent.atomic.AtomicReference<java.util.concurrent.Future<LockSession>> reopening =
                new java.util.concurrent.atomic.AtomicReference<>();
        pool.afterRetiringForTests = () -> { // slot 1's session is retired; a caller reopens the slot
            pool.afterRetiringForTests = null;
            armed.set(true);
            reopening.set(threads.submit(pool::session));
            try {
                assertThat(borrowing.await(10, TimeUnit.SECONDS)).isTrue();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        List<LockSession> retired = new java.util.concurrent.CopyOnWriteArrayList<>();

        java.util.concurrent.Future<?> retiring = threads.submit(() -> pool.retireIdle(0, retired::add));

        try {
            retiring.get(5, TimeUnit.SECONDS); // the borrow would hold it for up to 30 s
        } finally {
            go.countDown();
        }
        assertThat(retired).containsExactly(second);
        LockSession reopened = reopening.get().get(10, TimeUnit.SECONDS);
        assertThat(reopened).isNotSameAs(second);
        assertThat(pool.live()).as("the reopened slot kept its new session").contains(reopened);
        reopened.callClaimed(x -> null);
        first.callClaimed(x -> null);
        second.connection.close();
    }

    /** Says the blocked step has begun, then holds it until the test lets it go (at most 10 s). */
    private static void signalThenWait(java.util.concurrent.CountDownLatch begun, java.util.concurrent.CountDownLatch go) {
        begun.countDown();
        try {
            go.await(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void atTheBoundCallersShareTheSessionsThereAre() throws Exception {
        pool = pool(1);
        pool.start();
        LockSession first = pool.session();

        LockSession second = threads.submit(pool::session).get(10, TimeUnit.SECONDS);

        assertThat(second).as("no second session may be opened").isSameAs(first);
        first.callClaimed(c -> null);
        second.callClaimed(c -> null);
        assertThat(pool.live()).hasSize(1);
    }

    @Test
    void aLoneCallerStaysOnItsSession() throws Exception {
        pool = pool(4);
        LockSession started = pool.start();
        for (int i = 0; i < 5; i++) {
            LockSession session = pool.session();
            assertThat(session).isSameAs(started);
            session.callClaimed(c -> null);
        }
        assertThat(pool.live()).hasSize(1);
    }
}
