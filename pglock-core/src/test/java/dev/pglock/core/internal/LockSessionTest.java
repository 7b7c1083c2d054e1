package dev.pglock.core.internal;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Issue 16: an idle lock session may go back to the pool, but never one that a caller was handed and
 * has not used yet, and never one that holds a lock. The interleavings are forced by calling the
 * steps in the racing order on one thread.
 */
class LockSessionTest {

    private Connection connection;
    private LockSession session;

    @BeforeEach
    void open() throws Exception {
        connection = PgTestDatabase.get().connect();
        session = LockSession.withPid(connection);
    }

    @AfterEach
    void close() throws Exception {
        connection.close();
    }

    @Test
    void aSessionHandedToACallerIsNotRetiredBeforeTheCallerRanItsStatement() throws Exception {
        assertThat(session.claim()).isTrue(); // SessionPool.session() handed it out

        assertThat(session.retireIfIdle(0)).as("retired between the hand-out and the call").isFalse();

        boolean valid = session.callClaimed(c -> c.isValid(1));
        assertThat(valid).isTrue();
        assertThat(session.retireIfIdle(0)).as("idle, unclaimed, holding nothing").isTrue();
        assertThat(session.isEnded()).isTrue();
        assertThat(session.claim()).as("a retired session is never handed out again").isFalse();
    }

    @Test
    void aSessionThatHoldsALockIsNotRetired() throws Exception {
        assertThat(session.claim()).isTrue();
        session.callClaimed(c -> {
            session.lockTaken();
            return null;
        });

        assertThat(session.retireIfIdle(0)).isFalse();

        session.call(c -> {
            session.lockReleased();
            return null;
        });
        assertThat(session.retireIfIdle(0)).isTrue();
    }

    @Test
    void aSessionUsedRecentlyIsNotRetired() throws Exception {
        assertThat(session.claim()).isTrue();
        session.callClaimed(c -> null);

        assertThat(session.retireIfIdle(java.util.concurrent.TimeUnit.MINUTES.toNanos(1))).isFalse();
        assertThat(session.isEnded()).isFalse();
    }
}
