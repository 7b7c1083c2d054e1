package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.observation.ObservationRegistry;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.boot.actuate.autoconfigure.endpoint.condition.ConditionalOnAvailableEndpoint;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnSingleCandidate;
import org.springframework.boot.health.autoconfigure.contributor.ConditionalOnEnabledHealthIndicator;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * pglock's operations side, each part switched on by what is on the classpath: Micrometer meters and
 * observations ({@link PgLockMetrics}; {@code pglock.metrics.enabled=false} turns them off), the
 * {@code pglock} health indicator ({@link PgLockHealthIndicator}; {@code management.health.pglock.enabled}),
 * and the {@code pglock} Actuator endpoint ({@link PgLockEndpoint}; exposed like any endpoint). Each
 * bean backs off when the application defines one of its type.
 */
@AutoConfiguration(after = PgLockAutoConfiguration.class, afterName = {
        "org.springframework.boot.micrometer.metrics.autoconfigure.CompositeMeterRegistryAutoConfiguration",
        "org.springframework.boot.micrometer.metrics.autoconfigure.MetricsAutoConfiguration",
        "org.springframework.boot.micrometer.observation.autoconfigure.ObservationAutoConfiguration"})
@ConditionalOnBean(PgLockClients.class)
public final class PgLockObservabilityAutoConfiguration {

    /** Meters and observations, when Micrometer and a MeterRegistry are there. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass({MeterRegistry.class, ObservationRegistry.class})
    @ConditionalOnBean(MeterRegistry.class)
    @ConditionalOnPgLockSwitch(name = "pglock.metrics.enabled", ifMissing = true)
    static final class Metrics {

        @Bean
        @ConditionalOnMissingBean
        PgLockMetrics pgLockMetrics(MeterRegistry meters, ObjectProvider<ObservationRegistry> observations) {
            // PgLockClients passes it to every client it builds, and binds its gauges to each.
            return new PgLockMetrics(meters, observations.getIfUnique(() -> ObservationRegistry.NOOP));
        }
    }

    /** The health indicator, when Spring Boot's health support is there. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass({HealthIndicator.class, ConditionalOnEnabledHealthIndicator.class})
    static final class Health {

        /** Its own class, so the condition's annotation is only read once the class check passed. */
        @Configuration(proxyBeanMethods = false)
        @ConditionalOnEnabledHealthIndicator("pglock")
        static final class Enabled {

            /** Named so that the health endpoint shows it as {@code pglock}. */
            @Bean
            @ConditionalOnMissingBean(name = "pglockHealthIndicator")
            PgLockHealthIndicator pglockHealthIndicator(PgLockClients clients) {
                return new PgLockHealthIndicator(clients::built);
            }
        }
    }

    /** The endpoint, when Actuator is there and the endpoint is exposed. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass({Endpoint.class, ConditionalOnAvailableEndpoint.class})
    static final class Actuator {

        /** Its own class, so the condition's annotation is only read once the class check passed. */
        @Configuration(proxyBeanMethods = false)
        @ConditionalOnAvailableEndpoint(PgLockEndpoint.class)
        static final class Available {

            @Bean
            @ConditionalOnMissingBean
            @ConditionalOnSingleCandidate(LockClient.class)
            PgLockEndpoint pgLockEndpoint(ObjectProvider<LockClient> client) {
                return new PgLockEndpoint(client::getObject);
            }
        }
    }
}
