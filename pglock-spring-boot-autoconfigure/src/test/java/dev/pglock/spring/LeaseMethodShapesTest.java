package dev.pglock.spring;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import org.junit.jupiter.api.Test;
import org.springframework.jdbc.core.JdbcTemplate;

/** The method-shape suite with {@code pglock.mode=lease}. */
class LeaseMethodShapesTest extends MethodShapesIntegrationTest {

    @Override
    protected LockMode mode() {
        return LockMode.LEASE;
    }

    /**
     * A lease joined to a transaction is still checked before the commit when the work under it
     * threw and the caller caught it and commits: that work may commit too. (The NESTED exception
     * in the shared suite is for advisory transaction locks, lost only with the work they covered.)
     */
    @Test
    void aLeaseLostUnderWorkThatThrewStillCannotCommit() {
        runner().run(context -> {
            var manager = context.getBean(org.springframework.transaction.PlatformTransactionManager.class);
            var transaction = new org.springframework.transaction.support.TransactionTemplate(manager);
            LockTemplate locks = context.getBean(LockTemplate.class).inTransaction();
            JdbcTemplate jdbc = context.getBean(JdbcTemplate.class);
            LockClient other = otherReplica();

            assertThatThrownBy(() -> transaction.executeWithoutResult(status -> {
                try {
                    locks.execute("lost-under-work", lock -> {
                        jdbc.update("UPDATE " + counters + " SET value = value + 1 WHERE id = 1");
                        other.forceRelease("lost-under-work"); // the lease is gone, and another takes it
                        other.acquire(LockRequest.of("lost-under-work"));
                        throw new IllegalStateException("handled");
                    });
                } catch (IllegalStateException handled) {
                    // the caller carries on and commits
                }
            })).isInstanceOf(LockLostException.class);

            assertThat(read(jdbc)).as("nothing committed under the lost lease").isZero();
        });
    }
}
