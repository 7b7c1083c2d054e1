package dev.pglock.spring;

import dev.pglock.core.LockMode;

/** The method-shape suite with {@code pglock.mode=advisory}. */
class AdvisoryMethodShapesTest extends MethodShapesIntegrationTest {

    @Override
    protected LockMode mode() {
        return LockMode.ADVISORY;
    }
}
