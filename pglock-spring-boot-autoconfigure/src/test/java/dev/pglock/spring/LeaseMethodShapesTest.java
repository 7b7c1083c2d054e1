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

    /**
     * Review: a lease lock joined to the transaction from a beforeCommit callback (a
     * {@code @TransactionalEventListener} of phase BEFORE_COMMIT) was never confirmed: Spring calls
     * the synchronizations registered before that phase began, so the transaction committed the work
     * although the lease had been lost and another replica held the key. It is now refused, and the
     * transaction rolls back.
     */
    @Test
    void aLeaseJoinedToTheTransactionWhileItCommitsIsRefused() {
        runner().run(context -> {
            LockTemplate locks = context.getBean(LockTemplate.class).inTransaction();
            JdbcTemplate jdbc = context.getBean(JdbcTemplate.class);
            LockClient other = otherReplica();

            assertRefusedWhileCommitting(context, "while-committing", () -> locks.execute("while-committing", lock -> {
                jdbc.update("UPDATE " + counters + " SET value = value + 1 WHERE id = 1");
                other.forceRelease("while-committing"); // the lease is gone, another takes it
                other.acquire(LockRequest.of("while-committing"));
                return null;
            }));
        });
    }

    /**
     * The same through a {@code @Transactional} method that joins the committing transaction (a
     * listener calling a transactional service): a review found the first form of the check letting
     * it through, and the second refusing every joining method; now the joined scope is looked through.
     */
    @Test
    void aLeaseJoinedToTheCommittingTransactionThroughAJoiningMethodIsRefused() {
        runner().run(context -> {
            Accounts accounts = context.getBean(Accounts.class);
            assertRefusedWhileCommitting(context, "account", () -> accounts.incrementInTransaction(() -> { }));
        });
    }

    /** A transaction of its own, begun in such a callback, confirms its lease before its own commit. */
    @Test
    void aLeaseJoinedToANewTransactionBegunWhileAnotherCommitsIsTaken() {
        runner().run(context -> {
            var manager = context.getBean(org.springframework.transaction.PlatformTransactionManager.class);
            var transaction = new org.springframework.transaction.support.TransactionTemplate(manager);
            var ownTransaction = new org.springframework.transaction.support.TransactionTemplate(manager);
            ownTransaction.setPropagationBehavior(org.springframework.transaction.TransactionDefinition.PROPAGATION_REQUIRES_NEW);
            LockTemplate locks = context.getBean(LockTemplate.class).inTransaction();
            JdbcTemplate jdbc = context.getBean(JdbcTemplate.class);

            inBeforeCommit(transaction, () -> ownTransaction.executeWithoutResult(inner -> locks.execute(
                    "own-transaction", lock -> jdbc.update("UPDATE " + counters + " SET value = value + 1 WHERE id = 1"))));

            assertThat(read(jdbc)).as("committed by the transaction of its own").isEqualTo(1);
            assertThat(otherReplica().tryAcquire(LockRequest.of("own-transaction"))).as("released").isPresent();
        });
    }

    /** Runs a transaction that does nothing but run {@code work} in its beforeCommit. */
    private static void inBeforeCommit(org.springframework.transaction.support.TransactionTemplate transaction,
            Runnable work) {
        transaction.executeWithoutResult(status ->
                org.springframework.transaction.support.TransactionSynchronizationManager.registerSynchronization(
                        new org.springframework.transaction.support.TransactionSynchronization() {
                            @Override
                            public void beforeCommit(boolean readOnly) {
                                work.run();
                            }
                        }));
    }

    /**
     * Runs {@code work} in the beforeCommit of a transaction on pglock's DataSource: refused with the
     * lock's key named, and nothing committed.
     */
    private void assertRefusedWhileCommitting(org.springframework.context.ApplicationContext context, String key,
            Runnable work) {
        var manager = context.getBean(org.springframework.transaction.PlatformTransactionManager.class);
        var transaction = new org.springframework.transaction.support.TransactionTemplate(manager);
        assertThatThrownBy(() -> inBeforeCommit(transaction, work))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("'" + key + "'")
                .hasMessageContaining("while that transaction completes");
        assertThat(read(context.getBean(JdbcTemplate.class))).as("nothing committed").isZero();
    }
}
