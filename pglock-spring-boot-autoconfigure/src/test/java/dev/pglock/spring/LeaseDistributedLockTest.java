package dev.pglock.spring;

import dev.pglock.core.LockMode;

/** The @DistributedLock suite with {@code pglock.mode=lease}. */
class LeaseDistributedLockTest extends DistributedLockIntegrationTest {

    @Override
    protected LockMode mode() {
        return LockMode.LEASE;
    }
}
