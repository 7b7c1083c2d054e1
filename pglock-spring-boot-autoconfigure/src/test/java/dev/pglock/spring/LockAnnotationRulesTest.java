package dev.pglock.spring;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.PgLock;
import dev.pglock.core.LockRequest;
import dev.pglock.spring.boot.autoconfigure.PgLockAutoConfiguration;
import dev.pglock.spring.boot.autoconfigure.PgLockClients;
import dev.pglock.spring.boot.autoconfigure.PgLockDataSource;
import dev.pglock.test.PgTestDatabase;
import java.io.IOException;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.aop.support.AopUtils;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.aop.AopAutoConfiguration;
import org.springframework.boot.flyway.autoconfigure.FlywayAutoConfiguration;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.jdbc.autoconfigure.DataSourceTransactionManagerAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.boot.transaction.autoconfigure.TransactionAutoConfiguration;
import org.springframework.cache.annotation.Cacheable;
import org.springframework.cache.annotation.EnableCaching;
import org.springframework.cache.concurrent.ConcurrentMapCacheManager;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.resilience.annotation.EnableResilientMethods;
import org.springframework.resilience.annotation.Retryable;

/**
 * Issue 14, points 5 to 10 and the template: keys, start-up order, the lock DataSource, bean
 * back-off, proxying, advice order. The rules do not depend on the mode; they run in advisory mode.
 */
@ExtendWith(OutputCaptureExtension.class)
class LockAnnotationRulesTest {

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String namespace = PgTestDatabase.uniqueName("rules");
    private final String table = PgTestDatabase.uniqueName("pglock_rules");
    private final String flywayHistory = PgTestDatabase.uniqueName("flyway_rules");
    private final List<AutoCloseable> toClose = new ArrayList<>();

    private ApplicationContextRunner runner() {
        return new ApplicationContextRunner()
                .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class,
                        DataSourceTransactionManagerAutoConfiguration.class, TransactionAutoConfiguration.class,
                        AopAutoConfiguration.class, PgLockAutoConfiguration.class))
                .withPropertyValues(datasource())
                .withPropertyValues("pglock.namespace=" + namespace, "pglock.table.name=" + table,
                        "pglock.heartbeat-interval=1s", "pglock.lease=60s");
    }

    private String[] datasource() {
        return new String[] {"spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                "spring.datasource.password=" + db.password()};
    }

    @AfterEach
    void cleanUp() throws Exception {
        for (AutoCloseable c : toClose) {
            c.close();
        }
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq;"
                    + " DROP TABLE IF EXISTS " + flywayHistory);
        }
    }

    // ---- 5. keys ---------------------------------------------------------------------------------

    /** Before: '#accountId' on touch(long id) silently locked 'account:null' for every call. */
    @Test
    void aKeyVariableThatIsNotAParameterStopsTheStart() {
        runner().withBean(MisnamedKey.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("MisnamedKey.touch(..)")
                    .hasMessageContaining("'account:' + #accountId").hasMessageContaining("#accountId")
                    .hasMessageContaining("its parameters are #id");
        });
    }

    /** Before: an identity toString locked a different key on every call (no exclusion at all). */
    @Test
    void aKeyValueWithoutAStableStringFormIsRefusedAtTheCall() {
        runner().withBean(KeyValues.class).run(context -> {
            KeyValues keys = context.getBean(KeyValues.class);
            assertThatThrownBy(() -> keys.on(new Object())).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.on(..)").hasMessageContaining("'#thing'")
                    .hasMessageContaining("java.lang.Object").hasMessageContaining("identity");
            assertThatThrownBy(() -> keys.on(new int[] {1})).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("an array");
            assertThatThrownBy(() -> keys.on(List.of("a"))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("a collection");
            assertThatThrownBy(() -> keys.allArguments("a", 1)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("#root.args");
            // Proxies of a value without its own toString (a lazy JPA reference, a Spring AOP proxy)
            // declare toString, but forward it to Object's: before, they passed, and every call locked
            // a key of its own.
            org.springframework.aop.framework.ProxyFactory cglib = new org.springframework.aop.framework.ProxyFactory(
                    new Plain());
            cglib.setProxyTargetClass(true);
            Object jdk = new org.springframework.aop.framework.ProxyFactory(new Plain()).getProxy();
            Object generic = java.lang.reflect.Proxy.newProxyInstance(getClass().getClassLoader(),
                    new Class<?>[] {Runnable.class}, (proxy, method, args) -> method.invoke(new Plain(), args));
            for (Object proxy : List.of(cglib.getProxy(), jdk, generic)) {
                assertThatThrownBy(() -> keys.on(proxy)).as(proxy.getClass().getName())
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("identity");
            }
            // A key expression that fails names the method and the expression, not only SpEL's code.
            assertThatThrownBy(() -> keys.onCustomer(new Order(null))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.onCustomer(..)").hasMessageContaining("'#order.customer.id'")
                    .hasRootCauseInstanceOf(org.springframework.expression.spel.SpelEvaluationException.class);
            assertThat(keys.runs()).as("nothing ran").isZero();

            assertThat(keys.on("customer-7")).isEqualTo("customer-7");
            assertThat(keys.on("me@beef")).as("a string is taken as it is").isEqualTo("me@beef");
            assertThat(keys.onCustomer(new Order(new Customer(7)))).isEqualTo("7");
            assertThat(keys.on(42L)).isEqualTo("42");
            UUID id = UUID.randomUUID();
            assertThat(keys.on(id)).isEqualTo(id.toString());
            assertThat(keys.on(LockMode.LEASE)).isEqualTo("LEASE");
            assertThat(keys.on(new CustomerId(7))).isEqualTo("CustomerId[value=7]");
        });
    }

    /**
     * Before: the default key was the simple class name and the method name, so same-named classes
     * in two packages, and overloads, shared one lock; then the parameter types were still named by
     * their simple names, so overloads on two packages' same-named types shared one.
     */
    @Test
    void defaultKeysAreDistinctAcrossPackagesAndOverloadsAndNeverNameTheProxy(CapturedOutput output) {
        runner().withBean("jobsA", dev.pglock.spring.keys.a.Jobs.class)
                .withBean("jobsB", dev.pglock.spring.keys.b.Jobs.class)
                .withBean("mapper", dev.pglock.spring.keys.a.Mapper.class, () -> (dev.pglock.spring.keys.a.Mapper)
                        java.lang.reflect.Proxy.newProxyInstance(getClass().getClassLoader(),
                                new Class<?>[] {dev.pglock.spring.keys.a.Mapper.class},
                                (proxy, method, args) -> LockContext.current().key()))
                .withBean("lambdaMapper", dev.pglock.spring.keys.a.Mapper.class,
                        () -> tenant -> LockContext.current().key())
                .withBean("keyedLambda", dev.pglock.spring.keys.a.KeyedMapper.class,
                        () -> tenant -> LockContext.current().key())
                .withBean("classKeyedLambda", dev.pglock.spring.keys.a.ClassKeyedMapper.class,
                        () -> tenant -> LockContext.current().key())
                .withBean("classKeyedProxy", dev.pglock.spring.keys.a.ClassKeyedMapper.class, () ->
                        (dev.pglock.spring.keys.a.ClassKeyedMapper) java.lang.reflect.Proxy.newProxyInstance(
                                getClass().getClassLoader(), new Class<?>[] {dev.pglock.spring.keys.a.ClassKeyedMapper.class},
                                (proxy, method, args) -> LockContext.current().key())).run(context -> {
                    var a = context.getBean(dev.pglock.spring.keys.a.Jobs.class);
                    var b = context.getBean(dev.pglock.spring.keys.b.Jobs.class);
                    assertThat(AopUtils.isCglibProxy(a)).isTrue();
                    List<String> keys = List.of(a.run(), a.run("t"), a.run(1L), b.run(), b.run("t"),
                            a.run(new dev.pglock.spring.keys.a.Jobs()), a.run(new dev.pglock.spring.keys.b.Jobs()));
                    assertThat(keys).doesNotHaveDuplicates().noneMatch(key -> key.contains("$$"));
                    assertThat(keys.get(0)).isEqualTo("dev.pglock.spring.keys.a.Jobs.run()");
                    assertThat(keys.get(1)).isEqualTo("dev.pglock.spring.keys.a.Jobs.run(java.lang.String)");
                    assertThat(keys.get(2)).isEqualTo("dev.pglock.spring.keys.a.Jobs.run(long)");
                    assertThat(keys.get(6)).isEqualTo("dev.pglock.spring.keys.a.Jobs.run(dev.pglock.spring.keys.b.Jobs)");
                    // Before: a bean that is a JDK dynamic proxy was named by its proxy class, $ProxyNN,
                    // numbered in creation order: two replicas could lock under different keys.
                    assertThat(context.getBean("mapper", dev.pglock.spring.keys.a.Mapper.class).sync("t"))
                            .as("a JDK proxy's key").isEqualTo("dev.pglock.spring.keys.a.Mapper.sync(java.lang.String)");
                    // Before: a lambda bean's was "…$$Lambda/0x00007f4c90138408.sync(…)", an address
                    assertThat(context.getBean("lambdaMapper", dev.pglock.spring.keys.a.Mapper.class).sync("t"))
                            .as("a lambda's key").isEqualTo("dev.pglock.spring.keys.a.Mapper.sync(java.lang.String)");
                    // Before: "#tenant" stopped the start, as the lambda's own method has no parameter names
                    assertThat(context.getBean(dev.pglock.spring.keys.a.KeyedMapper.class).sync("t")).isEqualTo("t");
                    // Before: #root.targetClass was the lambda's or the proxy's class, named per JVM (a hunt)
                    for (String bean : List.of("classKeyedLambda", "classKeyedProxy")) {
                        assertThat(context.getBean(bean, dev.pglock.spring.keys.a.ClassKeyedMapper.class).sync("t"))
                                .as(bean).isEqualTo("dev.pglock.spring.keys.a.ClassKeyedMapper:t");
                    }
                    assertThat(output).as("nor was it warned about as a final method").doesNotContain("has no effect");
                });
    }

    @Test
    void anAdvisoryLockThatJoinsTheTransactionRefusesAHoldAtLeastAtStartUp() {
        runner().withBean(HeldAfterCommit.class).run(context -> {
            assertThat(context).hasFailed();
            assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("HeldAfterCommit.run(..)")
                    .hasMessageContaining("holdAtLeast").hasMessageContaining("commit ends it");
        });
    }

    // ---- 6. start-up order -----------------------------------------------------------------------

    /**
     * The lease table comes from a Flyway migration and pglock must not create it. Before: the lock
     * client could be built before Flyway ran, and failed the start for a missing table.
     */
    @Test
    void theLockClientStartsAfterFlywayCreatedItsTable() {
        runner().withConfiguration(AutoConfigurations.of(FlywayAutoConfiguration.class))
                .withPropertyValues("pglock.mode=lease", "pglock.table.initialize-schema=never",
                        "spring.flyway.locations=classpath:db/pglock-rules", "spring.flyway.table=" + flywayHistory,
                        "spring.flyway.baseline-on-migrate=true", "spring.flyway.baseline-version=0",
                        "spring.flyway.placeholders.pglock_table=" + table)
                .withBean(EagerLockUser.class).run(context -> {
                    assertThat(context).hasNotFailed();
                    context.getBean(LockClient.class).acquire(LockRequest.of("after-flyway")).release();
                });
    }

    // ---- 7. a separate lock DataSource -----------------------------------------------------------

    @Test
    void aSeparateLockDataSourceNeverReplacesTheApplicationsOwn() {
        runner().withUserConfiguration(SeparateLockDataSource.class).run(context -> {
            assertThat(context).hasNotFailed();
            DataSource application = context.getBean(DataSource.class);
            assertThat(application).as("Boot's DataSource is still the application's")
                    .isNotSameAs(context.getBean("lockDataSource"));
            assertThat(context.getBean(PgLockClients.class).dataSource()).isSameAs(context.getBean("lockDataSource"));
            context.getBean(LockClient.class).acquire(LockRequest.of("separate")).release();
        });
    }

    // ---- 8. back-off and names -------------------------------------------------------------------

    @Test
    void beansArePrefixedAndTwoDataSourcesWithoutAPrimaryGiveAClearMessage() {
        runner().run(context -> assertThat(context).hasBean("pgLockTemplate").hasBean("pgLockClient")
                .hasBean("pgLockClients").hasBean("pgLockDistributedLockAdvisor").hasBean("pgLockTransactionAdvisor"));
        new ApplicationContextRunner().withConfiguration(AutoConfigurations.of(PgLockAutoConfiguration.class))
                .withUserConfiguration(TwoPlainDataSources.class).run(context -> {
                    assertThat(context).hasFailed();
                    assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("found 2 DataSource beans")
                            .hasMessageContaining("@Primary").hasMessageContaining("@PgLockDataSource");
                    var analysis = new dev.pglock.spring.boot.autoconfigure.PgLockFailureAnalyzer()
                            .analyze(context.getStartupFailure());
                    assertThat(analysis.getDescription()).contains("found 2 DataSource beans, none of them primary");
                    assertThat(analysis.getAction()).contains("@Primary").contains("defaultCandidate = false");
                });
    }

    @Test
    void anApplicationsOwnLockOperationsMakesTheTemplateBackOff() {
        HikariDataSource pool = db.pooledDataSource(2);
        toClose.add(pool);
        runner().withBean("myOperations", LockOperations.class, () -> {
            LockClient own = PgLock.advisory(pool).namespace(namespace).build();
            toClose.add(0, own);
            return new LockTemplate(own);
        }).run(context -> {
                    assertThat(context).hasSingleBean(LockOperations.class).doesNotHaveBean("pgLockTemplate");
                });
    }

    /**
     * Review (a read-only helper's hunt in the starter): with a LockClient bean of the application's
     * own, which may lock on another database, the template was still given the application's
     * DataSource, so inTransaction = true took pg_advisory_xact_lock in the application's transaction,
     * in another database than every other holder of the key: both ran. A client the starter did not
     * build now gets no DataSource, and a lock in the transaction is refused at the call, saying how
     * to give the template its client's DataSource.
     */
    @Test
    void aLockInTheTransactionOnAnApplicationsOwnClientIsRefusedUnlessItsDataSourceIsKnown() {
        HikariDataSource elsewhere = db.pooledDataSource(2); // stands for another database
        toClose.add(elsewhere);
        runner().withBean("ownClient", LockClient.class, () -> {
            LockClient own = PgLock.advisory(elsewhere).namespace(namespace).build();
            toClose.add(0, own);
            return own;
        }).withBean(InTheTransaction.class).run(context -> {
            assertThat(context).hasNotFailed().doesNotHaveBean("pgLockClient");
            InTheTransaction bean = context.getBean(InTheTransaction.class);
            assertThatThrownBy(bean::run).as("locked in the application's transaction, not its client's database")
                    .isInstanceOf(IllegalStateException.class).hasMessageContaining("DataSource")
                    .hasMessageContaining("new LockTemplate(");
            assertThat(bean.runs()).isZero();
        });
    }

    /** The same refusal must not reach the starter's own client behind a Spring AOP proxy (tracing, metrics). */
    @Test
    void aLockInTheTransactionOnTheStartersClientBehindAnAopProxyIsTaken() {
        runner().withBean("wrapsTheClient", org.springframework.beans.factory.config.BeanPostProcessor.class,
                () -> new org.springframework.beans.factory.config.BeanPostProcessor() {
                    @Override
                    public Object postProcessAfterInitialization(Object bean, String name) {
                        return "pgLockClient".equals(name)
                                ? new org.springframework.aop.framework.ProxyFactory(bean).getProxy() : bean;
                    }
                }).withBean(InTheTransaction.class).run(context -> {
                    assertThat(AopUtils.isAopProxy(context.getBean(LockClient.class))).isTrue();
                    InTheTransaction bean = context.getBean(InTheTransaction.class);
                    bean.run();
                    assertThat(bean.runs()).isEqualTo(1);
                });
    }

    /**
     * Review of the interface method used for generated classes: a JDK proxy of two interfaces that
     * declare one method is called with the first one's, and the annotation on the second was no
     * longer found: the bean was proxied, but its calls ran unlocked.
     */
    @Test
    void aJdkProxyOfTwoInterfacesIsLockedWhicheverDeclaresTheAnnotation() {
        runner().withBean("twoFaces", dev.pglock.spring.keys.a.TwoFaces.Plainly.class,
                () -> (dev.pglock.spring.keys.a.TwoFaces.Plainly) java.lang.reflect.Proxy.newProxyInstance(
                        getClass().getClassLoader(), new Class<?>[] {dev.pglock.spring.keys.a.TwoFaces.Plainly.class,
                                dev.pglock.spring.keys.a.TwoFaces.Locked.class},
                        (proxy, method, args) -> LockContext.current().key())).run(context -> {
                    var bean = context.getBean(dev.pglock.spring.keys.a.TwoFaces.Plainly.class);
                    assertThat(bean.run()).as("locked through the first interface").isEqualTo("two-faces");
                    assertThat(((dev.pglock.spring.keys.a.TwoFaces.Locked) bean).run()).isEqualTo("two-faces");
                });
    }

    // ---- 9. proxying -----------------------------------------------------------------------------

    /** Before: with spring.aop.auto=false and no transaction management, nothing created proxies. */
    @Test
    void lockedMethodsAreProxiedWithoutAopAutoConfigurationOrTransactions() {
        new ApplicationContextRunner()
                .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class))
                .withPropertyValues(datasource()).withPropertyValues("pglock.namespace=" + namespace,
                        "spring.aop.auto=false")
                .withBean(KeyValues.class).run(context -> {
                    KeyValues keys = context.getBean(KeyValues.class);
                    assertThat(AopUtils.isAopProxy(keys)).isTrue();
                    assertThat(keys.heldInside("proxied")).isTrue();
                });
    }

    /**
     * Review: an application's own DistributedLockAdvisor bean without the infrastructure role, with
     * spring.aop.auto=false, is not applied by the infrastructure proxy creator, while the starter's
     * inner advisor is: its locked methods ran with no lock, silently. The start now fails naming the
     * bean.
     */
    @Test
    void aBeanAdvisedInsideTheTransactionOnlyStopsTheStart() {
        new ApplicationContextRunner()
                .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class))
                .withPropertyValues(datasource()).withPropertyValues("pglock.namespace=" + namespace,
                        "spring.aop.auto=false")
                .withUserConfiguration(OwnAdvisor.class).withBean("keyValues", KeyValues.class).run(context -> {
                    assertThat(context).hasFailed();
                    assertThat(context.getStartupFailure()).hasStackTraceContaining("keyValues")
                            .hasStackTraceContaining("DistributedLockAdvisor");
                });
    }

    @Configuration(proxyBeanMethods = false)
    static class OwnAdvisor {
        @Bean
        static DistributedLockAdvisor myLockAdvisor(org.springframework.beans.factory.ObjectProvider<LockTemplate> templates) {
            return new DistributedLockAdvisor(templates, new LockDefaults(LockMode.ADVISORY, Duration.ZERO,
                    Duration.ofSeconds(10), Duration.ZERO, Duration.ofSeconds(2)),
                    org.springframework.core.Ordered.LOWEST_PRECEDENCE - 1);
        }
    }

    @Test
    void pglockEnabledFalseWarnsOnceThatLockedMethodsRunUnlocked(CapturedOutput output) {
        runner().withPropertyValues("pglock.enabled=false")
                .withConfiguration(AutoConfigurations.of(
                        dev.pglock.spring.boot.autoconfigure.PgLockDisabledAutoConfiguration.class))
                .withBean(KeyValues.class).run(context -> {
                    assertThat(context).hasNotFailed();
                    assertThat(output).containsOnlyOnce("pglock.enabled=false")
                            .contains("runs WITHOUT a lock");
                });
    }

    @Test
    void anUninterceptableLockedMethodIsAStartUpWarning(CapturedOutput output) {
        runner().withBean(FinalMethod.class).withBean(SelfInvoking.class).run(context -> {
            assertThat(output).contains("@DistributedLock on FinalMethod.run(..) has no effect");
            assertThat(output).contains("@DistributedLock on SelfInvoking.locked(..) is called from"
                    + " SelfInvoking.outer(..) in the same class").doesNotContain("from SelfInvoking.other(..)");
        });
    }

    /** A method returning a Stream (or Iterator) is locked only while it runs: a start-up warning says so. */
    @Test
    void aLockedMethodReturningAStreamIsAStartUpWarning(CapturedOutput output) {
        runner().withBean(LazyResults.class).run(context -> {
            assertThat(output).contains("@DistributedLock on LazyResults.numbers(..) returns java.util.stream.Stream:"
                    + " its lock is released when the method returns").doesNotContain("LazyResults.list(..) returns");
        });
    }

    // ---- 10. advice order ------------------------------------------------------------------------

    /** Spring Framework 7's @Retryable is outermost: each attempt takes the lock anew. */
    @Test
    void aRetryReacquiresTheLockForEachAttempt() {
        runner().withUserConfiguration(RetryConfig.class).run(context -> {
            Flaky flaky = context.getBean(Flaky.class);
            assertThat(flaky.run()).isEqualTo(3);
            assertThat(flaky.locks()).as("one acquisition per attempt").hasSize(3).doesNotHaveDuplicates();
        });
    }

    /** Spring Retry's @Retryable (order LOWEST_PRECEDENCE - 1 by default, like pglock's) is outermost too. */
    @Test
    void aSpringRetryRetryReacquiresTheLockForEachAttempt() {
        runner().withUserConfiguration(SpringRetryConfig.class).run(context -> {
            SpringRetryFlaky flaky = context.getBean(SpringRetryFlaky.class);
            assertThat(flaky.run()).isEqualTo(3);
            assertThat(flaky.locks()).as("one acquisition per attempt").hasSize(3).doesNotHaveDuplicates();
        });
    }

    /** @Cacheable at its default order is inside the lock: a hit still takes the lock. */
    @Test
    void atDefaultOrdersTheLockWrapsTheCache() {
        runner().withUserConfiguration(CacheConfig.class).run(context -> {
            Cached cached = context.getBean(Cached.class);
            LockClient client = context.getBean(LockClient.class);
            assertThat(cached.value("x")).isEqualTo(1);
            assertThat(cached.value("x")).as("a cache hit").isEqualTo(1);
            assertThat(cached.computed()).isEqualTo(1);
            HeldLock other = client.acquire(LockRequest.of("cached:x").detached());
            assertThatThrownBy(() -> cached.value("x")).as("the hit needs the lock")
                    .isInstanceOf(dev.pglock.core.LockNotAcquiredException.class);
            other.release();
        });
    }

    // ---- the template ----------------------------------------------------------------------------

    @Test
    void theTemplateReturnsOutcomesRethrowsCheckedExceptionsAndKeepsDefaultsInItsRequests() {
        runner().withPropertyValues("pglock.wait=3s", "pglock.hold-at-least=0s").run(context -> {
            LockOperations locks = context.getBean(LockOperations.class);
            LockOutcome<String> ran = locks.tryExecute("template", lock -> "value");
            assertThat(ran.ran()).isTrue();
            assertThat(ran.value()).isEqualTo("value");
            LockOutcome<String> ranNull = locks.tryExecute("template", lock -> null);
            assertThat(ranNull.ran()).isTrue();
            assertThat(ranNull.toOptional()).isEmpty();

            IOException checked = new IOException("disk");
            assertThatThrownBy(() -> locks.execute("template", lock -> {
                throw checked;
            })).isSameAs(checked);

            assertThat(locks.request("template").waitAtMost()).as("the configured default")
                    .isEqualTo(Duration.ofSeconds(3));
            assertThat(locks.request("template").holdAtLeast(Duration.ofSeconds(1)).waitAtMost())
                    .isEqualTo(Duration.ofSeconds(3));

            LockClient client = context.getBean(LockClient.class);
            HeldLock taken = client.acquire(LockRequest.of("template").detached());
            LockOutcome<String> notRun = locks.tryExecute(locks.request("template").waitAtMost(Duration.ZERO),
                    lock -> "value");
            assertThat(notRun.ran()).isFalse();
            assertThat(notRun.orElse("fallback")).isEqualTo("fallback");
            taken.release();
        });
    }

    // ---- beans -----------------------------------------------------------------------------------

    static class MisnamedKey {
        @DistributedLock(key = "'account:' + #accountId")
        public void touch(long id) {
        }
    }

    /**
     * Review (a read-only helper's hunt): SpEL's + turns its operands into strings before pglock sees
     * the key, so the checks above never ran for 'customer:' + #customer: an entity without its own
     * toString locked a different key on every call, and a null argument locked "thing:null" for every
     * such call. A record whose component has Object's toString did the same as a whole key.
     */
    @Test
    void aKeyBuiltFromAValueWithoutAStableStringFormIsRefusedAtTheCall() {
        runner().withBean(KeyValues.class).run(context -> {
            KeyValues keys = context.getBean(KeyValues.class);
            assertThatThrownBy(() -> keys.prefixed(new Plain())).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.prefixed(..)").hasMessageContaining("'thing:' + #thing")
                    .hasMessageContaining(Plain.class.getName()).hasMessageContaining("identity");
            assertThatThrownBy(() -> keys.prefixed(null)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.prefixed(..)").hasMessageContaining("null");
            assertThatThrownBy(() -> keys.on(new Holder(new Plain()))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("identity");
            assertThatThrownBy(() -> keys.prefixed(new Holder(new Plain()))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("identity");
            // Before: an array's or a lambda's identity inside a record's string ("Holder[inside=[J@58c1c010]")
            // was not seen, and each call locked another key (a helper's hunt in the starter).
            Runnable lambda = () -> { };
            for (Object inside : List.of(new long[] {1, 2}, new String[] {"a"}, new int[][] {{1}}, lambda)) {
                assertThatThrownBy(() -> keys.on(new Holder(inside))).as(String.valueOf(inside))
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("identity");
                assertThatThrownBy(() -> keys.prefixed(new Holder(inside))).as(String.valueOf(inside))
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("identity");
            }
            assertThat(keys.runs()).as("nothing ran").isZero();
            // A user's text that only looks like an array's identity, with a hash too short for one, is kept.
            assertThat(keys.on(new Holder("[I@1]"))).isEqualTo("Holder[inside=[I@1]]");
            assertThat(keys.on(new Holder("v1/0x1f@a"))).isEqualTo("Holder[inside=v1/0x1f@a]");
            // A lambda loaded from a CDS or AOT cache has a short, unpadded address: still refused.
            assertThatThrownBy(() -> keys.on(new Holder("com.example.Config$$Lambda/0x800000a1c@1a2b3c4")))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("identity");

            assertThat(keys.prefixed(7L)).isEqualTo("thing:7");
            assertThat(keys.prefixed(new CustomerId(7))).isEqualTo("thing:CustomerId[value=7]");
            assertThat(keys.prefixed("me@beef")).isEqualTo("thing:me@beef");
            assertThat(keys.named(null)).as("null handed to a method, not turned into a string").isEqualTo("none");
            // Joined elements are as stable as they were before the check: only an identity among them is refused.
            assertThat(keys.batch(List.of(1L, 2L, 3L))).isEqualTo("batch:1,2,3");
            assertThat(keys.batch(new long[] {1, 2})).isEqualTo("batch:1,2");
            // (an element with no converter to String fails the conversion itself, as it did before)
            assertThatThrownBy(() -> keys.batch(List.of(new Plain()))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.batch(..)");
            assertThatThrownBy(() -> keys.batch(java.util.Map.of("k", new Plain()))).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("KeyValues.batch(..)");
            // A + that a condition skips for a null is not refused for it.
            assertThat(keys.invoice(null)).isEqualTo("invoice:all");
            assertThat(keys.invoice(7L)).isEqualTo("invoice:7");
        });
    }

    /**
     * A hunt in the starter: a set or map joined into a key ('batch:' + #ids) gave its elements in its
     * iteration order, which for Set.of and Map.of comes from a seed drawn per JVM, and for a hash set
     * of enums from identity hashes: the same elements made two keys on two replicas, and both ran.
     * A second hunt: a HashSet of numbers or strings too, whose elements in one bucket (1 and 17 in a
     * table of 16) iterate in the order they were added, so a batch that arrived as [17, 1] on one
     * replica and [1, 17] on another made two keys. Every set or map of two or more elements without
     * an order of its own is refused at the call. Sorted, insertion-ordered and enum sets are kept, and
     * any set of one element.
     */
    @Test
    void aKeyPartFromAnUnorderedSetOrMapIsRefused() {
        runner().withBean(KeyValues.class).run(context -> {
            KeyValues keys = context.getBean(KeyValues.class);
            java.util.Set<java.util.concurrent.TimeUnit> enums = new java.util.HashSet<>(
                    List.of(java.util.concurrent.TimeUnit.SECONDS, java.util.concurrent.TimeUnit.MILLISECONDS));
            for (Object drawn : List.of(java.util.Set.of(1L, 2L), java.util.Map.of("a", 1, "b", 2), enums,
                    new java.util.HashMap<>(java.util.Map.of(java.util.concurrent.TimeUnit.SECONDS, 1,
                            java.util.concurrent.TimeUnit.DAYS, 2)))) {
                assertThatThrownBy(() -> keys.batch(drawn)).as(drawn.getClass().getName())
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("KeyValues.batch(..)")
                        .hasMessageContaining("without an order of its own");
            }
            for (List<Long> arrived : List.of(List.of(1L, 17L), List.of(17L, 1L))) { // one bucket of 16
                assertThatThrownBy(() -> keys.batch(new java.util.HashSet<>(arrived))).as("HashSet of " + arrived)
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("without an order of its own");
            }
            java.util.Set<String> one = new java.util.HashSet<>(List.of("Aa", "BB"));
            assertThat(keys.batch(new java.util.TreeSet<>(one))).isEqualTo("batch:Aa,BB");
            assertThat(keys.batch(new java.util.LinkedHashSet<>(List.of("BB", "Aa")))).isEqualTo("batch:BB,Aa");
            assertThat(keys.batch(java.util.EnumSet.copyOf(enums))).isEqualTo("batch:MILLISECONDS,SECONDS");
            assertThat(keys.batch(java.util.Set.of(7L))).isEqualTo("batch:7");
            // what the refusal says to do
            assertThat(keys.sortedBatch(java.util.Set.of("BB", "Aa"))).isEqualTo("batch:Aa,BB");
        });
    }

    /**
     * A second hunt: a java.util.Date (java.sql's too) or a Calendar writes itself in the JVM's
     * default time zone, so the same instant made another key on a replica set to another zone, and
     * both ran. Refused at the call, as a whole key and as a part, naming what to use instead.
     */
    @Test
    void aKeyFromADateOrCalendarIsRefusedAsItsStringDependsOnTheTimeZone() {
        runner().withBean(KeyValues.class).run(context -> {
            KeyValues keys = context.getBean(KeyValues.class);
            for (Object zoned : List.of(new java.util.Date(0), new java.sql.Timestamp(0), new java.sql.Date(0),
                    new java.util.GregorianCalendar())) {
                assertThatThrownBy(() -> keys.on(zoned)).as(zoned.getClass().getName())
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time zone");
                assertThatThrownBy(() -> keys.prefixed(zoned)).as(zoned.getClass().getName() + " as a part")
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time zone");
            }
            assertThat(keys.runs()).isZero();
            assertThat(keys.on(java.time.Instant.EPOCH)).isEqualTo("1970-01-01T00:00:00Z");
        });
    }

    record Holder(Object inside) {
    }

    record CustomerId(long value) {
    }

    static class KeyValues {
        private final AtomicInteger runs = new AtomicInteger();

        public int runs() {
            return runs.get();
        }

        @DistributedLock(key = "#thing")
        public String on(Object thing) {
            runs.incrementAndGet();
            return LockContext.current().key();
        }

        @DistributedLock(key = "'thing:' + #thing")
        public String prefixed(Object thing) {
            runs.incrementAndGet();
            return LockContext.current().key();
        }

        @DistributedLock(key = "'batch:' + #ids")
        public String batch(Object ids) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "'batch:' + #ids.stream().sorted().toList()")
        public String sortedBatch(java.util.Set<String> ids) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#id == null ? 'invoice:all' : 'invoice:' + #id")
        public String invoice(Long id) {
            return LockContext.current().key();
        }

        @DistributedLock(key = "#root.target.nameOr(#name, 'none')")
        public String named(String name) {
            return LockContext.current().key();
        }

        public String nameOr(String name, String otherwise) {
            return name == null ? otherwise : name;
        }

        @DistributedLock(key = "#order.customer.id")
        public String onCustomer(Order order) {
            runs.incrementAndGet();
            return LockContext.current().key();
        }

        @DistributedLock(key = "#root.args")
        public void allArguments(String a, int b) {
            runs.incrementAndGet();
        }

        @DistributedLock(key = "#key")
        public boolean heldInside(String key) {
            return LockContext.current().isHeld();
        }
    }

    /** A value with Object's toString; its proxies forward toString to it. */
    public static class Plain implements Runnable {
        @Override
        public void run() {
        }
    }

    public record Customer(long id) {
    }

    public record Order(Customer customer) {
    }

    static class InTheTransaction {
        private final AtomicInteger runs = new AtomicInteger();

        @org.springframework.transaction.annotation.Transactional
        @DistributedLock(key = "'own-client-tx'", inTransaction = true)
        public void run() {
            runs.incrementAndGet();
        }

        int runs() {
            return runs.get();
        }
    }

    static class HeldAfterCommit {
        @org.springframework.transaction.annotation.Transactional
        @DistributedLock(holdAtLeast = "30s", inTransaction = true)
        public void run() {
        }
    }

    static class SelfInvoking {
        @DistributedLock
        public void locked() {
        }

        public void outer() {
            locked(); // bypasses the proxy
        }

        private SelfInvoking self = this;

        public void other() {
            self.locked(); // through a reference (the proxy, when injected): not reported
        }
    }

    static class LazyResults {
        @DistributedLock(key = "'lazy'")
        public java.util.stream.Stream<Integer> numbers() {
            return java.util.stream.Stream.of(1, 2, 3);
        }

        @DistributedLock(key = "'eager'")
        public List<Integer> list() {
            return List.of(1, 2, 3);
        }
    }

    static class FinalMethod {
        @DistributedLock
        public final void run() {
        }
    }

    /** Uses the lock client while the context starts, as a bean that locks in its constructor would. */
    static class EagerLockUser {
        EagerLockUser(LockClient client) {
            client.acquire(LockRequest.of("at-start-up")).release();
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class SeparateLockDataSource {
        @Bean(defaultCandidate = false, destroyMethod = "close")
        @PgLockDataSource
        HikariDataSource lockDataSource() {
            return db.pooledDataSource(2);
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class TwoPlainDataSources {
        @Bean(destroyMethod = "close")
        HikariDataSource first() {
            return db.pooledDataSource(2);
        }

        @Bean(destroyMethod = "close")
        HikariDataSource second() {
            return db.pooledDataSource(2);
        }
    }

    @Configuration(proxyBeanMethods = false)
    @EnableResilientMethods
    static class RetryConfig {
        @Bean
        Flaky flaky() {
            return new Flaky();
        }
    }

    /** Records the lock of each attempt and fails the first two. */
    abstract static class Attempts {
        private final List<HeldLock> locks = new java.util.concurrent.CopyOnWriteArrayList<>();

        public List<HeldLock> locks() {
            return locks;
        }

        int attempt() {
            locks.add(LockContext.current());
            if (locks.size() < 3) {
                throw new IllegalStateException("attempt " + locks.size());
            }
            return locks.size();
        }
    }

    static class Flaky extends Attempts {
        @Retryable(maxRetries = 2, delay = 0)
        @DistributedLock(key = "'flaky'")
        public int run() {
            return attempt();
        }
    }

    @Configuration(proxyBeanMethods = false)
    @org.springframework.retry.annotation.EnableRetry
    static class SpringRetryConfig {
        @Bean
        SpringRetryFlaky springRetryFlaky() {
            return new SpringRetryFlaky();
        }
    }

    static class SpringRetryFlaky extends Attempts {
        @org.springframework.retry.annotation.Retryable(maxAttempts = 3,
                backoff = @org.springframework.retry.annotation.Backoff(delay = 1))
        @DistributedLock(key = "'spring-retry'")
        public int run() {
            return attempt();
        }
    }

    @Configuration(proxyBeanMethods = false)
    @EnableCaching
    static class CacheConfig {
        @Bean
        ConcurrentMapCacheManager cacheManager() {
            return new ConcurrentMapCacheManager();
        }

        @Bean
        Cached cached() {
            return new Cached();
        }
    }

    static class Cached {
        private final AtomicInteger computed = new AtomicInteger();

        public int computed() {
            return computed.get();
        }

        @Cacheable("values")
        @DistributedLock(key = "'cached:' + #name")
        public int value(String name) {
            return computed.incrementAndGet();
        }
    }
}
