package dev.pglock.spring.boot.autoconfigure;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.context.annotation.Bean;

/**
 * With {@code pglock.enabled=false}, says once at start-up that {@code @DistributedLock} methods run
 * without any lock, so a switch left off in production is seen in the log.
 */
@AutoConfiguration
@ConditionalOnPgLockSwitch(name = "pglock.enabled", ifMissing = true, whenOn = false)
public final class PgLockDisabledAutoConfiguration {

    private static final Logger log = LoggerFactory.getLogger(PgLockDisabledAutoConfiguration.class);

    @Bean
    static SmartInitializingSingleton pgLockDisabledWarning() {
        return () -> log.warn("pglock.enabled=false: pglock is off, and every @DistributedLock method runs WITHOUT a"
                + " lock, on every replica at once. Remove the setting to lock again");
    }
}
