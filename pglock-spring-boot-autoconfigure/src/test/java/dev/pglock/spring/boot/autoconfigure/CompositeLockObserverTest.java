package dev.pglock.spring.boot.autoconfigure;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.core.LockMode;
import dev.pglock.core.LockObserver;
import dev.pglock.core.LockRequest;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** One observer that throws never keeps the others from hearing (each may have a scope to close). */
class CompositeLockObserverTest {

    @Test
    void anObserverThatThrowsDoesNotSilenceTheOthers() {
        List<String> heard = new ArrayList<>();
        LockObserver throwing = new LockObserver() {
            @Override
            public Acquisition acquiring(LockMode mode, LockRequest request) {
                return new Acquisition() {
                    @Override
                    public void notAcquired() {
                        throw new IllegalStateException("broken");
                    }
                };
            }
        };
        LockObserver listening = new LockObserver() {
            @Override
            public Acquisition acquiring(LockMode mode, LockRequest request) {
                heard.add("acquiring");
                return new Acquisition() {
                    @Override
                    public void notAcquired() {
                        heard.add("not acquired");
                    }
                };
            }
        };
        LockObserver failingAtStart = new LockObserver() {
            @Override
            public Acquisition acquiring(LockMode mode, LockRequest request) {
                throw new IllegalStateException("broken too");
            }
        };
        LockObserver composite = CompositeLockObserver.of(List.of(failingAtStart, listening, throwing));
        composite.acquiring(LockMode.LEASE, LockRequest.of("k")).notAcquired();
        assertThat(heard).containsExactly("acquiring", "not acquired");
    }
}
