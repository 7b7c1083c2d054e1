package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.spring.adapters.PgLockRegistry;
import dev.pglock.spring.adapters.PgLockShedLockProvider;
import net.javacrumbs.shedlock.core.LockProvider;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnSingleCandidate;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.integration.support.locks.LockRegistry;

/**
 * Drop-in adapters for the peers' users, each when the peer is on the classpath and the application
 * defines none of its own: a ShedLock {@link LockProvider} ({@link PgLockShedLockProvider}), so
 * {@code @SchedulerLock} methods run on pglock, and a Spring Integration {@link LockRegistry}
 * ({@link PgLockRegistry}). {@code pglock.adapters.shedlock.enabled=false} and
 * {@code pglock.adapters.spring-integration.enabled=false} turn them off.
 */
@AutoConfiguration(after = PgLockAutoConfiguration.class)
@ConditionalOnSingleCandidate(LockClient.class)
public final class PgLockAdaptersAutoConfiguration {

    /** ShedLock's LockProvider. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass(LockProvider.class)
    @ConditionalOnPgLockSwitch(name = "pglock.adapters.shedlock.enabled", ifMissing = true)
    static final class ShedLock {

        @Bean
        @ConditionalOnMissingBean(LockProvider.class)
        PgLockShedLockProvider pgLockShedLockProvider(LockClient client, PgLockProperties properties) {
            return new PgLockShedLockProvider(client, properties.getHeartbeatInterval());
        }
    }

    /** Spring Integration's LockRegistry. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass(LockRegistry.class)
    @ConditionalOnPgLockSwitch(name = "pglock.adapters.spring-integration.enabled", ifMissing = true)
    static final class SpringIntegration {

        @Bean
        @ConditionalOnMissingBean(LockRegistry.class)
        PgLockRegistry pgLockRegistry(LockClient client) {
            return new PgLockRegistry(client);
        }
    }
}
