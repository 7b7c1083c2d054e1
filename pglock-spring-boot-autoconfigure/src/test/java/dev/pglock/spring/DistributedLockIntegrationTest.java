package dev.pglock.spring;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.spring.boot.autoconfigure.PgLockAutoConfiguration;
import dev.pglock.test.PgTestDatabase;
import java.io.IOException;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.aop.framework.Advised;
import org.springframework.aop.support.AopUtils;
import org.springframework.boot.autoconfigure.aop.AopAutoConfiguration;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.jdbc.autoconfigure.DataSourceTransactionManagerAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.transaction.autoconfigure.TransactionAutoConfiguration;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.annotation.AliasFor;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.scheduling.annotation.EnableScheduling;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.transaction.annotation.Transactional;
import org.springframework.transaction.interceptor.TransactionAttributeSourceAdvisor;
import org.springframework.transaction.support.TransactionSynchronization;
import org.springframework.transaction.support.TransactionSynchronizationManager;

/**
 * @DistributedLock and LockTemplate in real application contexts, against the real database; run
 * once per lock mode by the subclasses.
 */
@ExtendWith(OutputCaptureExtension.class)
abstract class DistributedLockIntegrationTest {

    /** The mode the application is configured with. */
    protected abstract LockMode mode();

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String namespace = PgTestDatabase.uniqueName("aspect");
    private final String table = PgTestDatabase.uniqueName("pglock_aspect");
    private final ExecutorService threads = Executors.newCachedThreadPool();
    private final List<AutoCloseable> toClose = new ArrayList<>();

    private ApplicationContextRunner runner() {
        return new ApplicationContextRunner()
                .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class,
                        DataSourceTransactionManagerAutoConfiguration.class, TransactionAutoConfiguration.class,
                        AopAutoConfiguration.class, PgLockAutoConfiguration.class))
                .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(),
                        "spring.datasource.username=" + db.user(), "spring.datasource.password=" + db.password(),
                        "pglock.namespace=" + namespace, "pglock.table.name=" + table, "pglock.heartbeat-interval=1s",
                        "pglock.lease=60s", "pglock.mode=" + mode().name().toLowerCase(), "app.prefix=tenant-7")
                .withUserConfiguration(Beans.class);
    }

    /** Another replica's client on the same namespace (and a pool of its own), to hold keys the beans want. */
    private LockClient otherReplica(DataSource ignored) {
        com.zaxxer.hikari.HikariDataSource pool = db.pooledDataSource(4);
        LockClient client = mode() == LockMode.ADVISORY ? PgLock.advisory(pool).namespace(namespace).build()
                : PgLock.lease(pool).namespace(namespace).tableName(table).lease(Duration.ofSeconds(60))
                        .heartbeatInterval(Duration.ofSeconds(1)).build();
        toClose.add(client);
        toClose.add(pool);
        return client;
    }

    @AfterEach
    void cleanUp() throws Exception {
        threads.shutdownNow();
        for (AutoCloseable c : toClose) {
            c.close();
        }
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    private static void awaitQuietly(CountDownLatch latch) {
        try {
            latch.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Issue 12, point 12: two contexts as two replicas. Closing the first while its locked work runs
     * must not let the second in before that work has finished (before the fix, the second got the key
     * about 1.7 s before the first's method ended: a double holder on every rolling deploy).
     */
    @Test
    void closingTheContextWaitsForLockedWorkBeforeAnotherReplicaGetsTheKey() {
        runner().run(context -> {
            LockTemplate template = context.getBean(LockTemplate.class);
            LockClient replicaB = otherReplica(null);
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch finish = new CountDownLatch(1);
            java.util.concurrent.atomic.AtomicLong finishedAt = new java.util.concurrent.atomic.AtomicLong();
            Future<?> work = threads.submit(() -> template.execute("deploy", lock -> {
                inside.countDown();
                awaitQuietly(finish);
                lock.assertHeld();
                finishedAt.set(System.nanoTime());
                return null;
            }));
            assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();
            Future<?> closing = threads.submit(context::close);
            Future<Long> bGotIt = threads.submit(() -> {
                replicaB.acquire(LockRequest.of("deploy").waitAtMost(Duration.ofSeconds(60)));
                return System.nanoTime();
            });
            await().atMost(Duration.ofSeconds(10)).untilAsserted(() -> assertThatThrownBy(
                    () -> template.tryRun("another-key", () -> { })).isInstanceOf(IllegalStateException.class));
            assertThat(closing).as("the context waits for the locked work").isNotDone();
            assertThat(bGotIt).isNotDone();

            finish.countDown();
            work.get(10, TimeUnit.SECONDS);
            closing.get(10, TimeUnit.SECONDS);
            assertThat(bGotIt.get(10, TimeUnit.SECONDS)).as("replica B got the key after the work finished")
                    .isGreaterThan(finishedAt.get());
        });
    }

    /**
     * Issue 12, point 12: work still holding its lock when the shutdown phase runs out is told it lost
     * the lock before the other replica can get it.
     */
    @Test
    void lockedWorkStillRunningAtTheShutdownDeadlineIsToldBeforeTheKeyIsFreed() {
        runner().withPropertyValues("spring.lifecycle.timeout-per-shutdown-phase=1s").run(context -> {
            LockTemplate template = context.getBean(LockTemplate.class);
            LockClient replicaB = otherReplica(null);
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch finish = new CountDownLatch(1);
            java.util.concurrent.atomic.AtomicLong toldAt = new java.util.concurrent.atomic.AtomicLong();
            Future<Throwable> work = threads.submit(() -> org.assertj.core.api.Assertions.catchThrowable(
                    () -> template.execute("stuck", lock -> {
                        lock.onLost(e -> toldAt.set(System.nanoTime()));
                        inside.countDown();
                        awaitQuietly(finish);
                        lock.assertHeld();
                        return null;
                    })));
            assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();
            Future<Long> bGotIt = threads.submit(() -> {
                replicaB.acquire(LockRequest.of("stuck").waitAtMost(Duration.ofSeconds(60)));
                return System.nanoTime();
            });

            context.close();

            long got = bGotIt.get(10, TimeUnit.SECONDS);
            assertThat(toldAt.get()).as("the work was told").isPositive().isLessThan(got);
            finish.countDown();
            assertThat(work.get(10, TimeUnit.SECONDS)).isInstanceOf(dev.pglock.core.LockLostException.class);
        });
    }

    @Test
    void aSpelKeyLocksPerArgumentValue() {
        runner().run(context -> {
            Invoices invoices = context.getBean(Invoices.class);
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch leave = new CountDownLatch(1);
            Future<String> first = threads.submit(() -> invoices.pay(1, inside, leave));
            assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();

            assertThatThrownBy(() -> invoices.pay(1, new CountDownLatch(1), new CountDownLatch(0)))
                    .isInstanceOf(LockNotAcquiredException.class).hasMessageContaining("invoice:1");
            assertThat(invoices.pay(2, new CountDownLatch(1), new CountDownLatch(0)))
                    .as("another invoice is another lock").isEqualTo("invoice:2");

            leave.countDown();
            assertThat(first.get(10, TimeUnit.SECONDS)).isEqualTo("invoice:1");
            assertThat(invoices.pay(1, new CountDownLatch(1), new CountDownLatch(0))).isEqualTo("invoice:1");
        });
    }

    @Test
    void keyExpressionsSeeArgumentsTheRootBeansAndProperties() {
        runner().run(context -> {
            Keys keys = context.getBean(Keys.class);
            assertThat(keys.byIndex("a", "b")).isEqualTo("second:b");
            assertThat(keys.byRoot()).isEqualTo("byRoot@Keys");
            assertThat(keys.byBean(5)).isEqualTo("bean-prefix:5");
            assertThat(keys.byProperty(9)).isEqualTo("tenant-7:9");
            assertThat(keys.byDefault()).isEqualTo("dev.pglock.spring.DistributedLockIntegrationTest$Keys.byDefault()");
        });
    }

    @Test
    void aKeyThatEvaluatesToNullFailsTheCallNamingMethodAndExpression() {
        runner().run(context -> assertThatThrownBy(() -> context.getBean(Keys.class).nullable(null))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("Keys.nullable")
                .hasMessageContaining("#customer").hasMessageContaining("-parameters"));
    }

    @Test
    void aKeyThatDoesNotParseStopsTheStart() {
        runner().withUserConfiguration(BadKeyBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("BadKey.run").contains("'invoice:' +")
                    .contains("does not parse");
        });
    }

    /**
     * Review: a composed annotation carrying @DistributedLock put on a class locks nothing (the
     * annotation applies to methods): the start fails naming the class. Before, nothing was locked and
     * nothing said so.
     */
    @Test
    void aComposedLockAnnotationOnAClassStopsTheStart() {
        runner().withUserConfiguration(LockedClassBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("LockedClass").contains("@Locked")
                    .contains("methods");
        });
    }

    /**
     * A literal key written without quotes parses as arithmetic on names the call does not have
     * ({@code nightly - report}), and would fail at every call, every tick of a scheduled job: it
     * stops the start instead, saying to quote it. Keys that read the call's own properties
     * ({@code #root.methodName}, {@code methodName}, {@code args[0]}) still start.
     */
    @Test
    void aLiteralKeyWithoutQuotesStopsTheStart() {
        runner().withUserConfiguration(UnquotedKeyBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("UnquotedKey.run").contains("nightly, report")
                    .contains("'nightly-report'");
        });
        runner().run(context -> {
            assertThat(context.getBean(Keys.class).byBareRoot("x")).isEqualTo("byBareRoot:x");
            assertThat(context.getBean(Keys.class).byProjection(java.util.List.of("a", "b"))).isEqualTo("[A, B]");
            assertThat(context.getBean(Keys.class).byMapKey(java.util.Map.of("tenant", "t7"))).as("a bare map key")
                    .isEqualTo("t7");
            assertThat(context.getBean(Keys.class).byInlineMap(3)).isEqualTo("{tenant=3}");
        });
    }

    /** A key longer than pglock takes fails the call naming the method and the expression, not only the key. */
    @Test
    void aKeyTooLongFailsTheCallNamingMethodAndExpression() {
        runner().run(context -> assertThatThrownBy(() -> context.getBean(Keys.class).nullable("x".repeat(300)))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("Keys.nullable")
                .hasMessageContaining("#customer").hasMessageContaining("255"));
    }

    @Test
    void skippingAMethodThatReturnsAPrimitiveStopsTheStart() {
        runner().withUserConfiguration(PrimitiveSkipBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("PrimitiveSkip.count").contains("SKIP")
                    .contains("int");
        });
    }

    /**
     * Issue 18: {@code @DistributedLock(permits = 2)} lets at most two calls in at once across
     * replicas; a third waits until a permit is freed, and LockTemplate.withPermits sees the same bound.
     */
    @Test
    void aMethodWithPermitsRunsAtMostThatManyAtOnceAcrossReplicas() {
        runner().withUserConfiguration(CrewBean.class).run(context -> {
            Crew crew = context.getBean(Crew.class);
            LockTemplate template = context.getBean(LockTemplate.class);
            LockClient other = otherReplica(context.getBean(DataSource.class));
            HeldLock elsewhere = other.acquirePermit(LockRequest.of("crew"), 2);

            CountDownLatch leave = new CountDownLatch(1);
            CountDownLatch firstIn = new CountDownLatch(1);
            CountDownLatch secondIn = new CountDownLatch(1);
            Future<Integer> first = threads.submit(() -> crew.work(firstIn, leave));
            assertThat(firstIn.await(10, TimeUnit.SECONDS)).as("the second permit is free").isTrue();
            Future<Integer> second = threads.submit(() -> crew.work(secondIn, leave));
            assertThat(template.withPermits(2).tryRun("crew", () -> { })).as("both permits are held").isFalse();
            assertThat(secondIn.await(500, TimeUnit.MILLISECONDS)).as("a third holder waits").isFalse();
            assertThat(other.getPermits("crew")).hasSize(2);

            elsewhere.release();
            assertThat(secondIn.await(10, TimeUnit.SECONDS)).as("it gets the freed permit").isTrue();
            leave.countDown();
            assertThat(first.get(10, TimeUnit.SECONDS)).isEqualTo(2);
            assertThat(second.get(10, TimeUnit.SECONDS)).isEqualTo(2);
            assertThat(crew.mostInside()).isEqualTo(2);
            assertThatThrownBy(() -> template.withPermits(0)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("got 0");
            assertThatThrownBy(() -> template.withPermits(2).inTransaction()).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("transaction");
        });
    }

    @Test
    void permitsOutOfRangeOrWithSharedStopTheStart() {
        runner().withUserConfiguration(BadPermitsBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("BadPermits.run").contains("permits")
                    .contains("-1");
        });
        runner().withUserConfiguration(SharedPermitsBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("SharedPermits.run").contains("shared");
        });
    }

    @Test
    void aDurationThatIsNotOneStopsTheStart() {
        runner().withUserConfiguration(BadDurationBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("BadDuration.run").contains("waitAtMost")
                    .contains("soon");
        });
    }

    /**
     * Issue 14, point 4: a @Scheduled method skips quietly whatever it returns (before: a non-void one
     * threw on every other replica each tick); every other method throws, void included (before: a
     * void method returned as if it had run); whenLocked overrides both.
     */
    @Test
    void whenTheLockIsTakenScheduledMethodsSkipQuietlyAndOthersThrowUnlessToldOtherwise() {
        runner().run(context -> {
            Outcomes outcomes = context.getBean(Outcomes.class);
            LockClient other = otherReplica(context.getBean(DataSource.class));
            other.acquire(LockRequest.of("busy"));

            outcomes.tick();
            assertThat(outcomes.scheduledValue()).as("a @Scheduled method that returns a value skips too").isNull();
            assertThat(outcomes.runs()).as("the @Scheduled methods were skipped").isZero();
            assertThatThrownBy(outcomes::plainVoid).as("a void method that is not @Scheduled")
                    .isInstanceOf(LockNotAcquiredException.class).hasMessageContaining("Outcomes.plainVoid");
            assertThatThrownBy(outcomes::compute).isInstanceOf(LockNotAcquiredException.class)
                    .hasMessageContaining("Outcomes.compute").hasMessageContaining("busy");
            assertThat(outcomes.maybe()).isEmpty();
            // Before: null, where the caller expects an OptionalInt (a helper's hunt in the starter)
            assertThat(outcomes.maybeCount()).as("an empty OptionalInt").isEqualTo(java.util.OptionalInt.empty());
            assertThat(outcomes.orNull()).isNull();
            assertThatThrownBy(outcomes::tickOrThrow).isInstanceOf(LockNotAcquiredException.class);
            assertThat(outcomes.runs()).isZero();

            other.close();
            outcomes.tick();
            assertThat(outcomes.compute()).isEqualTo(42);
            assertThat(outcomes.maybe()).contains("value");
            assertThat(outcomes.scheduledValue()).isEqualTo(7);
            assertThat(outcomes.runs()).isEqualTo(4);
        });
    }

    /**
     * While the application shuts down the lock client grants nothing; a @Scheduled-style void method
     * (and any method told to SKIP) then skips quietly, as when the lock is taken, instead of failing
     * with an ERROR from the scheduler. A method that must run is told the client is closed.
     */
    @Test
    void duringShutdownSkippingMethodsSkipQuietlyAndOthersAreToldTheClientIsClosed() {
        runner().run(context -> {
            Outcomes outcomes = context.getBean(Outcomes.class);
            context.getBean(dev.pglock.spring.boot.autoconfigure.PgLockClients.class).stop();

            outcomes.tick();
            assertThat(outcomes.maybe()).isEmpty();
            assertThat(outcomes.runs()).as("nothing ran unlocked").isZero();
            assertThatThrownBy(outcomes::compute).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("closed");
            assertThatThrownBy(outcomes::tickOrThrow).isInstanceOf(IllegalStateException.class);
            assertThat(outcomes.runs()).isZero();
        });
    }

    /**
     * A component that stops at the default phase (0: plain Lifecycle beans, Spring Integration's
     * event-driven consumers; its pollers stop earlier still) may still call locked methods while it
     * stops: the lock clients close after it. They closed at DEFAULT_PHASE - 4096, before all of
     * those, which then failed with "the lock client is closed".
     */
    @Test
    void aComponentStoppingAtTheDefaultPhaseCanStillCallLockedMethods() {
        java.util.concurrent.atomic.AtomicReference<StopsAtPhaseZero> component = new java.util.concurrent.atomic.AtomicReference<>();
        runner().withBean(StopsAtPhaseZero.class).run(context -> component.set(context.getBean(StopsAtPhaseZero.class)));

        assertThat(component.get().failure).as("the locked call while stopping").isNull();
        assertThat(component.get().ran).as("ran under its lock while the component stopped").isTrue();
    }

    /** Calls a locked method from its stop(), at the phase plain Lifecycle beans have. */
    static class StopsAtPhaseZero implements org.springframework.context.SmartLifecycle,
            org.springframework.context.ApplicationContextAware {
        private org.springframework.context.ApplicationContext context;
        private volatile boolean running;
        volatile boolean ran;
        volatile Throwable failure;

        @Override
        public void setApplicationContext(org.springframework.context.ApplicationContext context) {
            this.context = context;
        }

        @Override
        public void start() {
            running = true;
        }

        @Override
        public boolean isRunning() {
            return running;
        }

        @Override
        public int getPhase() {
            return 0;
        }

        @Override
        public void stop() {
            running = false;
            try {
                context.getBean(Outcomes.class).plainVoid();
                ran = true;
            } catch (Throwable t) {
                failure = t;
            }
        }
    }

    @Test
    void anExceptionPassesThroughUnchangedAndTheLockIsReleased() {
        runner().run(context -> {
            Outcomes outcomes = context.getBean(Outcomes.class);
            IOException thrown = new IOException("disk full");
            assertThatThrownBy(() -> outcomes.fail(thrown)).isSameAs(thrown);
            assertThat(LockContext.find()).as("the context is unwound after the exception").isEmpty();
            LockClient other = otherReplica(context.getBean(DataSource.class));
            assertThat(other.tryAcquire(LockRequest.of("busy"))).as("released after the exception").isPresent();
        });
    }

    @Test
    void nestedLockedCallsEachSeeTheirOwnLock() {
        runner().run(context -> assertThat(context.getBean(Nesting.class).outer())
                .isEqualTo("outer > inner > outer"));
    }

    @Test
    void aBadSecondMethodStopsTheStartWithInterfaceProxiesToo() {
        runner().withPropertyValues("spring.aop.proxy-target-class=false").withUserConfiguration(TwoMethodsBean.class)
                .run(context -> {
                    assertThat(context).hasFailed();
                    assertThat(messages(context.getStartupFailure())).contains("second").contains("does not parse");
                });
    }

    @Test
    void anAnnotationTheClientWouldRefuseOnEveryCallStopsTheStart() {
        runner().withPropertyValues("pglock.mode=lease").withUserConfiguration(ShortLeaseBean.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(messages(context.getStartupFailure())).contains("ShortLease.run").contains("PT1S")
                    .contains("heartbeat");
        });
    }

    @Test
    void theRunningMethodSeesItsLockInLockContext() {
        runner().run(context -> {
            HeldLock seen = context.getBean(Outcomes.class).currentLock();
            assertThat(seen.key()).isEqualTo("busy");
            assertThat(seen.isHeld()).as("released once the method returned").isFalse();
            assertThat(LockContext.find()).isEmpty();
        });
    }

    @Test
    void interfaceBasedProxiesAreLockedToo() {
        runner().withPropertyValues("spring.aop.proxy-target-class=false").run(context -> {
            Greeter greeter = context.getBean(Greeter.class);
            assertThat(AopUtils.isJdkDynamicProxy(greeter)).isTrue();
            assertThat(greeter.greet("ann")).isEqualTo("hello ann under greet:ann");
        });
    }

    @Test
    void classBasedProxiesAreLocked() {
        runner().run(context -> {
            Greeter greeter = context.getBean(Greeter.class);
            assertThat(AopUtils.isCglibProxy(greeter)).isTrue();
            assertThat(greeter.greet("bob")).isEqualTo("hello bob under greet:bob");
        });
    }

    @Test
    void itWorksAsAMetaAnnotation() {
        runner().run(context -> {
            Outcomes outcomes = context.getBean(Outcomes.class);
            assertThat(outcomes.nightly()).isEqualTo("nightly-report");
            LockClient other = otherReplica(context.getBean(DataSource.class));
            assertThat(other.tryAcquire(LockRequest.of("nightly-report")))
                    .as("the meta-annotation's hold-at-least keeps it after the method returned").isEmpty();
        });
    }

    @Test
    void theModeCanBeChosenPerMethod() {
        runner().run(context -> {
            String seen = context.getBean(Outcomes.class).inLeaseMode();
            assertThat(seen).isEqualTo("LEASE:1");
            assertThat(context.getBean(LockClient.class).mode()).isEqualTo(mode());
        });
    }

    @Test
    void theLockWrapsTheTransactionAndIsStillHeldWhileItCommits() {
        runner().run(context -> {
            Ledger ledger = context.getBean(Ledger.class);
            Object advised = ledger;
            List<String> order = new ArrayList<>();
            for (var advisor : ((Advised) advised).getAdvisors()) {
                if (advisor instanceof DistributedLockAdvisor) {
                    order.add("lock");
                } else if (advisor == context.getBean(DistributedLockAdvisor.class).transactionAdvisor()) {
                    order.add("lock check inside the transaction");
                } else if (advisor instanceof TransactionAttributeSourceAdvisor
                        || advisor.getClass().getSimpleName().contains("Transaction")) {
                    order.add("transaction");
                }
            }
            assertThat(order).as("outermost first").containsExactly("lock", "transaction",
                    "lock check inside the transaction");

            LockClient other = otherReplica(context.getBean(DataSource.class));
            Map<String, Boolean> atCommit = ledger.book(other);
            assertThat(atCommit).containsEntry("transaction active inside", true)
                    .containsEntry("lock held after commit", true)
                    .containsEntry("others excluded after commit", true);
            assertThat(other.tryAcquire(LockRequest.of("ledger"))).as("released after the transaction").isPresent();
        });
    }

    @Test
    void theAspectOrderIsConfigurable() {
        runner().withPropertyValues("pglock.aspect-order=10").run(context -> {
            int order = context.getBean(DistributedLockAdvisor.class).getOrder();
            assertThat(order).isEqualTo(10);
        });
    }

    @Test
    void lockTemplateRunsCallbacksAndReportsWhetherTheyRan() {
        runner().run(context -> {
            LockTemplate template = context.getBean(LockTemplate.class);
            String result = template.execute("tpl", lock -> LockContext.current().key() + ":" + lock.isHeld());
            assertThat(result).isEqualTo("tpl:true");
            LockClient other = otherReplica(context.getBean(DataSource.class));
            HeldLock held = other.acquire(LockRequest.of("tpl"));
            AtomicInteger ran = new AtomicInteger();
            assertThat(template.tryRun("tpl", ran::incrementAndGet)).isFalse();
            LockCallback<Integer, RuntimeException> one = lock -> 1;
            assertThatThrownBy(() -> template.execute("tpl", one)).isInstanceOf(LockNotAcquiredException.class);
            // Review: an interrupted wait was reported as "held elsewhere; gave up after waiting".
            Thread.currentThread().interrupt();
            try {
                assertThatThrownBy(() -> template.execute(LockRequest.of("tpl").waitAtMost(Duration.ofSeconds(5)), one))
                        .isInstanceOf(LockNotAcquiredException.class).hasMessageContaining("interrupted")
                        .hasCauseInstanceOf(InterruptedException.class);
            } finally {
                assertThat(Thread.interrupted()).as("the interrupt is kept").isTrue();
            }
            held.release();
            assertThat(template.tryRun(LockRequest.of("tpl"), lock -> ran.incrementAndGet())).isTrue();
            assertThat(ran).hasValue(1);
        });
    }

    @Test
    void withAsyncTheLockIsTakenAndHeldOnTheExecutorThread() {
        runner().withUserConfiguration(AsyncConfig.class).run(context -> {
            AsyncWork work = context.getBean(AsyncWork.class);
            CountDownLatch inside = new CountDownLatch(1);
            CountDownLatch leave = new CountDownLatch(1);
            java.util.concurrent.CompletableFuture<String> result = work.run(inside, leave);
            assertThat(inside.await(10, TimeUnit.SECONDS)).isTrue();
            LockClient other = otherReplica(null);
            assertThat(other.tryAcquire(LockRequest.of("async-work"))).as("held while the async method runs").isEmpty();
            leave.countDown();
            assertThat(result.get(10, TimeUnit.SECONDS)).startsWith("async-work on ").doesNotEndWith(
                    Thread.currentThread().getName());
            await().atMost(Duration.ofSeconds(5)).until(() -> other.tryAcquire(LockRequest.of("async-work")).isPresent());
        });
    }

    /**
     * Two replicas (two application contexts, each with its own lock client) run the same
     * {@code @Scheduled} job every second: each tick runs exactly once in total.
     */
    @Test
    void eachScheduledTickRunsOnceAcrossTwoReplicas(CapturedOutput output) throws Exception {
        Map<Long, List<String>> runsPerSecond = new ConcurrentHashMap<>();
        ScheduledJob.runs = runsPerSecond;
        ApplicationContextRunner replicas = runner().withUserConfiguration(ScheduledJobConfig.class);
        LockClient observer = otherReplica(null);
        replicas.withPropertyValues("replica=A").run(a -> replicas.withPropertyValues("replica=B").run(b -> {
            await().atMost(Duration.ofSeconds(15)).until(() -> runsPerSecond.size() >= 4);
            // Between ticks (after hold-at-least) the job's lock is free: it is released, not kept.
            await().atMost(Duration.ofSeconds(5)).pollInterval(Duration.ofMillis(20)).until(() ->
                    observer.tryAcquire(LockRequest.of("ScheduledJob.report")).map(HeldLock::release).orElse(false));
        }));
        ScheduledJob.runs = null;
        assertThat(runsPerSecond).hasSizeGreaterThanOrEqualTo(4);
        runsPerSecond.forEach((second, replicasThatRan) ->
                assertThat(replicasThatRan).as("tick at second %d", second).hasSize(1));
        assertThat(output.getAll()).as("a skipped tick is no error").doesNotContain(" ERROR ");
    }

    private static String messages(Throwable t) {
        StringBuilder all = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            all.append(c.getMessage()).append('\n');
        }
        return all.toString();
    }

    // ---- the application under test ----

    @Configuration(proxyBeanMethods = false)
    static class Beans {
        @Bean
        Invoices invoices() {
            return new Invoices();
        }

        @Bean
        Keys keys() {
            return new Keys();
        }

        @Bean
        KeyPrefix keyPrefix() {
            return new KeyPrefix();
        }

        @Bean
        Outcomes outcomes() {
            return new Outcomes();
        }

        @Bean
        Nesting nesting() {
            return new Nesting();
        }

        @Bean
        static org.springframework.beans.factory.SmartInitializingSingleton wireNesting(
                org.springframework.beans.factory.ObjectProvider<Nesting> nesting) {
            return () -> nesting.getObject().setSelf(nesting.getObject());
        }

        @Bean
        Greeter greeter() {
            return new PoliteGreeter();
        }

        @Bean
        Ledger ledger(JdbcTemplate jdbc) {
            return new Ledger(jdbc);
        }

        @Bean
        JdbcTemplate jdbcTemplate(DataSource dataSource) {
            return new JdbcTemplate(dataSource);
        }
    }

    static class Invoices {
        @DistributedLock(key = "'invoice:' + #invoiceId", whenLocked = DistributedLock.WhenLocked.THROW)
        public String pay(long invoiceId, CountDownLatch inside, CountDownLatch leave) throws InterruptedException {
            inside.countDown();
            leave.await(10, TimeUnit.SECONDS);
            return LockContext.current().key();
        }
    }

    static class KeyPrefix {
        public String prefix() {
            return "bean-prefix";
        }
    }

    static class Keys {
        @DistributedLock(key = "'second:' + #p1")
        public String byIndex(String first, String second) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#root.methodName + '@' + #root.targetClass.simpleName")
        public String byRoot() {
            return LockContext.current().key();
        }

        @DistributedLock(key = "@keyPrefix.prefix() + ':' + #id")
        public String byBean(int id) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "'${app.prefix}:' + #id")
        public String byProperty(int id) {
            return LockContext.current().key();
        }

        @DistributedLock
        public String byDefault() {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#customer")
        public String nullable(String customer) {
            return customer;
        }

        @DistributedLock(key = "methodName + ':' + args[0]")
        public String byBareRoot(String value) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#values.![toUpperCase()].toString()")
        public String byProjection(java.util.List<String> values) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#headers[tenant]")
        public String byMapKey(java.util.Map<String, String> headers) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "{tenant: #id}.toString()")
        public String byInlineMap(int id) {
            return LockContext.current().key();
        }
    }

    @Target(ElementType.METHOD)
    @Retention(RetentionPolicy.RUNTIME)
    @DistributedLock(holdAtLeast = "30s")
    @interface NightlyJob {
        @AliasFor(annotation = DistributedLock.class, attribute = "key")
        String key();
    }

    static class Outcomes {
        private final AtomicInteger ran = new AtomicInteger();

        /** Read through the proxy: a CGLIB proxy's own fields are not the bean's. */
        public int runs() {
            return ran.get();
        }

        @Scheduled(fixedDelay = 3_600_000, initialDelay = 3_600_000)
        @DistributedLock(key = "'busy'")
        public void tick() {
            ran.incrementAndGet();
        }

        @Scheduled(fixedDelay = 3_600_000, initialDelay = 3_600_000)
        @DistributedLock(key = "'busy'")
        public Integer scheduledValue() {
            ran.incrementAndGet();
            return 7;
        }

        @DistributedLock(key = "'busy'")
        public void plainVoid() {
            ran.incrementAndGet();
        }

        @DistributedLock(key = "'busy'", whenLocked = DistributedLock.WhenLocked.THROW)
        public void tickOrThrow() {
            ran.incrementAndGet();
        }

        @DistributedLock(key = "'busy'")
        public int compute() {
            ran.incrementAndGet();
            return 42;
        }

        @DistributedLock(key = "'busy'", whenLocked = DistributedLock.WhenLocked.SKIP)
        public Optional<String> maybe() {
            ran.incrementAndGet();
            return Optional.of("value");
        }

        @DistributedLock(key = "'busy'", whenLocked = DistributedLock.WhenLocked.SKIP)
        public java.util.OptionalInt maybeCount() {
            ran.incrementAndGet();
            return java.util.OptionalInt.of(3);
        }

        @DistributedLock(key = "'busy'", whenLocked = DistributedLock.WhenLocked.SKIP)
        public String orNull() {
            return "value";
        }

        @DistributedLock(key = "'busy'")
        public void fail(IOException e) throws IOException {
            throw e;
        }

        @DistributedLock(key = "'busy'")
        public HeldLock currentLock() {
            return LockContext.current();
        }

        @NightlyJob(key = "'nightly-report'")
        public String nightly() {
            return LockContext.current().key();
        }

        @DistributedLock(key = "'lease-mode'", mode = DistributedLock.Mode.LEASE)
        public String inLeaseMode() {
            HeldLock lock = LockContext.current();
            return LockMode.LEASE + ":" + (lock.fencingToken() > 0 ? 1 : 0);
        }
    }

    interface Greeter {
        String greet(String name);
    }

    static class PoliteGreeter implements Greeter {
        @Override
        @DistributedLock(key = "'greet:' + #name")
        public String greet(String name) {
            return "hello " + name + " under " + LockContext.current().key();
        }
    }

    static class Ledger {
        private final JdbcTemplate jdbc;

        Ledger(JdbcTemplate jdbc) {
            this.jdbc = jdbc;
        }

        @Transactional
        @DistributedLock(key = "'ledger'")
        public Map<String, Boolean> book(LockClient other) {
            Map<String, Boolean> seen = new ConcurrentHashMap<>();
            jdbc.queryForObject("SELECT 1", Integer.class);
            seen.put("transaction active inside", TransactionSynchronizationManager.isActualTransactionActive());
            HeldLock lock = LockContext.current();
            TransactionSynchronizationManager.registerSynchronization(new TransactionSynchronization() {
                @Override
                public void afterCommit() {
                    seen.put("lock held after commit", lock.isHeld());
                    seen.put("others excluded after commit", other.tryAcquire(LockRequest.of("ledger")).isEmpty());
                }
            });
            return seen;
        }
    }

    static class Nesting {
        private Nesting self;

        void setSelf(Nesting self) {
            this.self = self;
        }

        @DistributedLock(key = "'outer'")
        public String outer() {
            String before = LockContext.current().key();
            String inner = self.inner();
            return before + " > " + inner + " > " + LockContext.current().key();
        }

        @DistributedLock(key = "'inner'")
        public String inner() {
            return LockContext.current().key();
        }
    }

    interface TwoMethods {
        void first();

        void second();
    }

    static class TwoMethodsImpl implements TwoMethods {
        @Override
        @DistributedLock(key = "'fine'")
        public void first() {
        }

        @Override
        @DistributedLock(key = "'broken' +")
        public void second() {
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class TwoMethodsBean {
        @Bean
        TwoMethods twoMethods() {
            return new TwoMethodsImpl();
        }
    }

    static class ShortLease {
        @DistributedLock(leaseFor = "1s")
        public void run() {
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class ShortLeaseBean {
        @Bean
        ShortLease shortLease() {
            return new ShortLease();
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class BadKeyBean {
        @Bean
        BadKey badKey() {
            return new BadKey();
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class LockedClassBean {
        @Bean
        LockedClass lockedClass() {
            return new LockedClass();
        }
    }

    /** A composed annotation that may sit on a class: @DistributedLock itself cannot. */
    @java.lang.annotation.Retention(java.lang.annotation.RetentionPolicy.RUNTIME)
    @java.lang.annotation.Target({java.lang.annotation.ElementType.TYPE, java.lang.annotation.ElementType.METHOD})
    @DistributedLock(key = "'locked-class'")
    @interface Locked {
    }

    @Locked
    static class LockedClass {
        public void run() {
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class UnquotedKeyBean {
        @Bean
        UnquotedKey unquotedKey() {
            return new UnquotedKey();
        }
    }

    static class UnquotedKey {
        @DistributedLock(key = "nightly-report")
        public void run() {
        }
    }

    static class BadKey {
        @DistributedLock(key = "'invoice:' +")
        public void run() {
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class PrimitiveSkipBean {
        @Bean
        PrimitiveSkip primitiveSkip() {
            return new PrimitiveSkip();
        }
    }

    static class PrimitiveSkip {
        @DistributedLock(whenLocked = DistributedLock.WhenLocked.SKIP)
        public int count() {
            return 1;
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class CrewBean {
        @Bean
        Crew crew() {
            return new Crew();
        }
    }

    static class Crew {
        final AtomicInteger inside = new AtomicInteger();
        final AtomicInteger mostInside = new AtomicInteger();

        /** The most calls inside at once (through the proxy: its own fields are not the bean's). */
        int mostInside() {
            return mostInside.get();
        }

        /** Waits inside until told to leave; answers how many were inside at the end, itself included. */
        @DistributedLock(key = "'crew'", permits = 2, waitAtMost = "30s")
        int work(CountDownLatch entered, CountDownLatch leave) throws InterruptedException {
            mostInside.accumulateAndGet(inside.incrementAndGet(), Math::max);
            entered.countDown();
            try {
                leave.await(30, TimeUnit.SECONDS);
                return mostInside.get();
            } finally {
                inside.decrementAndGet();
            }
        }
    }

    static class BadPermitsBean {
        @Bean
        BadPermits badPermits() {
            return new BadPermits();
        }
    }

    static class BadPermits {
        @DistributedLock(permits = -1)
        void run() {
        }
    }

    static class SharedPermitsBean {
        @Bean
        SharedPermits sharedPermits() {
            return new SharedPermits();
        }
    }

    static class SharedPermits {
        @DistributedLock(permits = 3, shared = true)
        void run() {
        }
    }

    static class BadDurationBean {
        @Bean
        BadDuration badDuration() {
            return new BadDuration();
        }
    }

    static class BadDuration {
        @DistributedLock(waitAtMost = "soon")
        public void run() {
        }
    }

    @Configuration(proxyBeanMethods = false)
    @org.springframework.scheduling.annotation.EnableAsync
    static class AsyncConfig {
        @Bean
        AsyncWork asyncWork() {
            return new AsyncWork();
        }
    }

    static class AsyncWork {
        @org.springframework.scheduling.annotation.Async
        @DistributedLock(key = "'async-work'")
        public java.util.concurrent.CompletableFuture<String> run(CountDownLatch inside, CountDownLatch leave)
                throws InterruptedException {
            inside.countDown();
            leave.await(10, TimeUnit.SECONDS);
            return java.util.concurrent.CompletableFuture.completedFuture(
                    LockContext.current().key() + " on " + Thread.currentThread().getName());
        }
    }

    @Configuration(proxyBeanMethods = false)
    @EnableScheduling
    static class ScheduledJobConfig {
        @Bean
        ScheduledJob scheduledJob(org.springframework.core.env.Environment environment) {
            return new ScheduledJob(environment.getProperty("replica"));
        }
    }

    static class ScheduledJob {
        static volatile Map<Long, List<String>> runs;
        private final String replica;

        ScheduledJob(String replica) {
            this.replica = replica;
        }

        @Scheduled(cron = "* * * * * *")
        @DistributedLock(holdAtLeast = "900ms")
        public void report() {
            Map<Long, List<String>> sink = runs;
            if (sink != null) {
                long second = System.currentTimeMillis() / 1000;
                sink.computeIfAbsent(second, s -> java.util.Collections.synchronizedList(new ArrayList<>())).add(replica);
            }
        }
    }
}
