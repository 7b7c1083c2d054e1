package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.spring.LeaderElection;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnSingleCandidate;
import org.springframework.context.ApplicationEventPublisher;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Conditional;
import org.springframework.context.annotation.Configuration;

/**
 * With {@code pglock.leader.key} set, this application stands as a leader candidate for that key
 * ({@link LeaderElection}); with Spring Integration on the classpath its leader events are published
 * too. A {@code LeaderElection} bean of the application's own replaces it.
 */
@AutoConfiguration(after = PgLockAutoConfiguration.class)
@ConditionalOnSingleCandidate(LockClient.class)
@Conditional(PgLockLeaderAutoConfiguration.KeySet.class)
public final class PgLockLeaderAutoConfiguration {

    @Bean
    @ConditionalOnMissingBean
    LeaderElection pgLockLeaderElection(LockClient client, PgLockProperties properties,
            ApplicationEventPublisher events) {
        PgLockProperties.Leader leader = properties.getLeader();
        try {
            dev.pglock.core.LockRequest.of(leader.getKey()); // the key's checks, at start-up
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("pglock.leader.key: " + e.getMessage(), e);
        }
        return new LeaderElection(client, leader.getKey(), leader.getData(), events);
    }

    /** Spring Integration's OnGrantedEvent / OnRevokedEvent, for listeners written for its initiator. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass(name = "org.springframework.integration.leader.event.OnGrantedEvent")
    static final class SpringIntegrationEvents {

        @Bean
        SpringIntegrationLeaderEvents pgLockSpringIntegrationLeaderEvents(ApplicationEventPublisher events) {
            return new SpringIntegrationLeaderEvents(events);
        }
    }

    /**
     * {@code pglock.leader.key} is set, to any value: unlike {@code @ConditionalOnProperty}, a key
     * named "false" is a key like any other, not a switch. A blank one is set too, and stops the start.
     */
    static final class KeySet extends org.springframework.boot.autoconfigure.condition.SpringBootCondition {
        @Override
        public org.springframework.boot.autoconfigure.condition.ConditionOutcome getMatchOutcome(
                org.springframework.context.annotation.ConditionContext context,
                org.springframework.core.type.AnnotatedTypeMetadata metadata) {
            boolean set = context.getEnvironment().containsProperty("pglock.leader.key");
            return new org.springframework.boot.autoconfigure.condition.ConditionOutcome(set,
                    "pglock.leader.key is " + (set ? "set" : "not set"));
        }
    }
}
