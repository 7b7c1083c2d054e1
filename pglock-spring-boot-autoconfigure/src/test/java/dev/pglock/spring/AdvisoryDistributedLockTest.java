package dev.pglock.spring;

import dev.pglock.core.LockMode;

/** The @DistributedLock suite with {@code pglock.mode=advisory}. */
class AdvisoryDistributedLockTest extends DistributedLockIntegrationTest {

    @Override
    protected LockMode mode() {
        return LockMode.ADVISORY;
    }
}
