package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockObserver;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.List;

/** Every {@link LockObserver} bean of the application, told in order. */
final class CompositeLockObserver implements LockObserver {

    private final List<LockObserver> observers;

    private CompositeLockObserver(List<LockObserver> observers) {
        this.observers = observers;
    }

    static LockObserver of(List<LockObserver> observers) {
        return switch (observers.size()) {
            case 0 -> LockObserver.NONE;
            case 1 -> observers.get(0);
            default -> new CompositeLockObserver(List.copyOf(observers));
        };
    }

    @Override
    public Acquisition acquiring(LockMode mode, LockRequest request) {
        // Told of the outcome in reverse order: an observer that opened a scope on this thread closes
        // it before the one opened before it.
        List<Acquisition> each = new java.util.ArrayList<>(observers.size());
        for (LockObserver observer : observers) {
            each.add(0, observer.acquiring(mode, request));
        }
        return new Acquisition() {
            @Override
            public Holding acquired(HeldLock lock) {
                List<Holding> holdings = each.stream().map(a -> a.acquired(lock)).toList();
                return lost -> holdings.forEach(h -> h.ended(lost));
            }

            @Override
            public void notAcquired() {
                each.forEach(Acquisition::notAcquired);
            }

            @Override
            public void failed(RuntimeException error) {
                each.forEach(a -> a.failed(error));
            }
        };
    }

    @Override
    public void heartbeat(LockMode mode, Duration took, boolean succeeded) {
        observers.forEach(o -> o.heartbeat(mode, took, succeeded));
    }

    @Override
    public void lost(LockMode mode, String key, LockLostException.Reason reason) {
        observers.forEach(o -> o.lost(mode, key, reason));
    }
}
