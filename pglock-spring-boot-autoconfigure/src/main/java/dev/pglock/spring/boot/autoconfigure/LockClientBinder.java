package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;

/**
 * An observer that also wants each lock client the starter builds (to register gauges on it).
 * Free of optional types, so that the always-active auto-configuration can look for it without
 * loading Micrometer.
 */
interface LockClientBinder {

    /** Called once for each client built, those built already included. */
    void bind(LockClient client);
}
