package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockObserver;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import java.util.List;

/**
 * Every {@link LockObserver} bean of the application, told in order; one that throws is logged and
 * does not keep the others from hearing (each may have opened a scope it must close).
 */
final class CompositeLockObserver implements LockObserver {

    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(CompositeLockObserver.class);

    private static void each(String what, Runnable call) {
        try {
            call.run();
        } catch (RuntimeException e) {
            log.warn("a LockObserver's {} callback threw; ignored", what, e);
        }
    }

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
            try {
                Acquisition acquisition = observer.acquiring(mode, request);
                each.add(0, acquisition == null ? Acquisition.NONE : acquisition);
            } catch (RuntimeException e) {
                log.warn("a LockObserver's acquiring callback threw; ignored", e);
            }
        }
        return new Acquisition() {
            @Override
            public Holding acquired(HeldLock lock) {
                List<Holding> holdings = new java.util.ArrayList<>(each.size());
                for (Acquisition a : each) {
                    each("acquired", () -> {
                        Holding h = a.acquired(lock);
                        holdings.add(h == null ? Holding.NONE : h);
                    });
                }
                return lost -> holdings.forEach(h -> each("ended", () -> h.ended(lost)));
            }

            @Override
            public void notAcquired() {
                each.forEach(a -> each("notAcquired", a::notAcquired));
            }

            @Override
            public void failed(RuntimeException error) {
                each.forEach(a -> each("failed", () -> a.failed(error)));
            }
        };
    }

    @Override
    public void heartbeat(LockMode mode, Duration took, boolean succeeded) {
        observers.forEach(o -> each("heartbeat", () -> o.heartbeat(mode, took, succeeded)));
    }

    @Override
    public void lost(LockMode mode, String key, LockLostException.Reason reason) {
        observers.forEach(o -> each("lost", () -> o.lost(mode, key, reason)));
    }
}
