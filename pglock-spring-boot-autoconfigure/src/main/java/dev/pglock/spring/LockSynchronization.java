package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.TransactionLock;
import org.springframework.transaction.support.TransactionSynchronization;
import org.springframework.transaction.support.TransactionSynchronizationManager;

/**
 * Ties a held lock to the running Spring transaction: before the commit it checks the lock is still
 * held (a transaction lock confirms itself in the transaction), so a lost lock rolls the transaction
 * back with {@link dev.pglock.core.LockLostException}; after completion it releases the lock, when
 * asked to, so the next holder sees the commit.
 */
final class LockSynchronization implements TransactionSynchronization {

    private final HeldLock lock;
    private final boolean release;

    private LockSynchronization(HeldLock lock, boolean release) {
        this.lock = lock;
        this.release = release;
    }

    /** Whether a transaction (or a transaction-synchronization scope) runs on this thread. */
    static boolean active() {
        return TransactionSynchronizationManager.isSynchronizationActive();
    }

    /** Checks the lock before the commit and releases it once the transaction has completed. */
    static void releaseAfterCompletion(HeldLock lock) {
        TransactionSynchronizationManager.registerSynchronization(new LockSynchronization(lock, true));
    }

    /** Checks the lock before the commit; its holder releases it. */
    static void checkBeforeCommit(HeldLock lock) {
        TransactionSynchronizationManager.registerSynchronization(new LockSynchronization(lock, false));
    }

    @Override
    public void beforeCommit(boolean readOnly) {
        if (lock instanceof TransactionLock transactionLock) {
            transactionLock.confirmBeforeCommit();
        } else {
            lock.assertHeld();
        }
    }

    @Override
    public void afterCompletion(int status) {
        if (release) {
            lock.close();
        }
    }

    @Override
    public String toString() {
        return "LockSynchronization[" + lock.key() + (release ? ", releases after completion" : "") + "]";
    }
}
