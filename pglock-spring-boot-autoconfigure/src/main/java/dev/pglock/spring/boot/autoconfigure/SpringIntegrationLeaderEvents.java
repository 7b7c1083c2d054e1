package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.spring.LeaderElection;
import org.springframework.context.ApplicationEvent;
import org.springframework.context.ApplicationEventPublisher;
import org.springframework.context.event.GenericApplicationListener;
import org.springframework.core.ResolvableType;
import org.springframework.integration.leader.Context;
import org.springframework.integration.leader.event.OnGrantedEvent;
import org.springframework.integration.leader.event.OnRevokedEvent;

/**
 * Republishes pglock's leader events as Spring Integration's {@link OnGrantedEvent} and
 * {@link OnRevokedEvent} (role: the leader key), so listeners written for
 * {@code LockRegistryLeaderInitiator} keep working.
 */
final class SpringIntegrationLeaderEvents implements GenericApplicationListener {

    private final ApplicationEventPublisher publisher;

    SpringIntegrationLeaderEvents(ApplicationEventPublisher publisher) {
        this.publisher = publisher;
    }

    @Override
    public boolean supportsEventType(ResolvableType eventType) {
        Class<?> type = eventType.toClass();
        return LeaderElection.LeaderElectedEvent.class.isAssignableFrom(type)
                || LeaderElection.LeaderRevokedEvent.class.isAssignableFrom(type);
    }

    @Override
    public void onApplicationEvent(ApplicationEvent event) {
        if (event instanceof LeaderElection.LeaderElectedEvent elected) {
            LeaderElection election = elected.election();
            publisher.publishEvent(new OnGrantedEvent(election, context(election), election.key()));
        } else if (event instanceof LeaderElection.LeaderRevokedEvent revoked) {
            LeaderElection election = revoked.election();
            publisher.publishEvent(new OnRevokedEvent(election, context(election), election.key()));
        }
    }

    private static Context context(LeaderElection election) {
        return new Context() {
            @Override
            public boolean isLeader() {
                return election.isLeader();
            }

            @Override
            public void yield() {
                election.yieldLeadership();
            }

            @Override
            public String getRole() {
                return election.key();
            }
        };
    }
}
