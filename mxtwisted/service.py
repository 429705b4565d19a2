"""The composition root: build every component of the homeserver explicitly.

:func:`make_homeserver` takes the validated configuration and returns a
:class:`HomeserverService` (a ``MultiService``). Nothing here is a global: a
test can build two homeservers in one process. Constructors do no I/O; the
I/O of starting (opening the database, running migrations, starting modules,
binding ports) happens in :meth:`HomeserverService.startService`, and in the
reverse order on stop: stop accepting, let in-flight requests finish, stop
modules, close the database.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxtwisted.api.client.rooms import RoomsResource
from mxtwisted.api.client.versions import ClientVersionsResource
from mxtwisted.api.federation.version import FederationVersionResource
from mxtwisted.api.health import HealthResource
from mxtwisted.api.keys.server import ServerKeyResource
from mxtwisted.api.wellknown import WellKnownResource
from mxtwisted.config import HomeserverConfig, ListenerConfig, RateLimit
from mxtwisted.handlers.account import AccountHandler
from mxtwisted.handlers.auth import Authenticator
from mxtwisted.handlers.auth_providers import AuthProviderChain, LocalPasswordProvider
from mxtwisted.handlers.passwords import PasswordHasher
from mxtwisted.handlers.profile import ProfileHandler
from mxtwisted.handlers.registration import RegistrationHandler
from mxtwisted.handlers.sessions import SessionIssuer
from mxtwisted.handlers.uia import UserInteractiveAuth
from mxtwisted.handlers.uia_stages import install_stages
from mxtwisted.http.resource import MatrixResource
from mxtwisted.http.router import Router
from mxtwisted.http.site import MatrixSite
from mxtwisted.interfaces import IAuthProvider, IModuleLifecycle
from mxtwisted.modules import LoadedModule, load_modules
from mxtwisted.notifier import Notifier
from mxtwisted.ratelimit import Ratelimiter
from mxtwisted.rooms.creation import RoomCreator
from mxtwisted.rooms.engine import RoomEngine
from mxtwisted.rooms.membership import MembershipHandler
from mxtwisted.rooms.policy import ModulePolicies
from mxtwisted.rooms.reader import RoomReader
from mxtwisted.server_keys import load_signing_keys, parse_old_signing_keys
from mxtwisted.tls import ReloadableServerTLS, TLSConfigError

log = Logger()

#: How long shutdown waits for in-flight requests before closing anyway.
SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass
class ClientComponents:
    """The handlers the Client-Server API is built from, constructed once per server in :meth:`HomeserverService._build_components`."""

    auth: Authenticator
    hasher: PasswordHasher
    providers: AuthProviderChain
    sessions: SessionIssuer
    uia: UserInteractiveAuth
    registration: RegistrationHandler
    ratelimiters: dict[str, Ratelimiter]
    notifier: Notifier
    rooms: RoomEngine
    membership: MembershipHandler
    room_creator: RoomCreator
    room_reader: RoomReader
    #: Profiles; the room engine hooks ``profile.add_profile_change_listener`` to send the new member events.
    profile: ProfileHandler
    #: Devices, password, deactivation; set after construction (it needs ``sessions``). Other parts add
    #: their clean-up with ``account.add_deactivation_hook`` (see mxtwisted.handlers.account).
    account: AccountHandler = field(init=False)
    #: Spam checkers and room policies (modules), hooked into rooms; directory and media ask them too.
    policies: ModulePolicies = field(init=False)
    #: Ephemeral stream sources for /sync (typing, receipts, presence; see mxtwisted.ephemeral).
    sync_sources: list = field(default_factory=list)
    #: ``set_presence(user_id, state)`` for /sync's ``set_presence`` parameter, or None.
    set_presence: Any = None
    #: Typing, receipts and read markers, presence (mxtwisted.ephemeral); set by ``_build_ephemeral``.
    typing: Any = None
    receipts: Any = None
    presence: Any = None
    #: /sync (mxtwisted.sync.handler.SyncHandler) and the user filters store; set by ``_build_sync``.
    sync: Any = None
    filters: Any = None
    #: Server-to-server: ``client``, ``keyring``, ``authenticator`` (mxtwisted.federation.FederationComponents).
    federation: Any = None
    #: Push rules (mxtwisted.push.handler.PushRulesHandler); set by ``build_client_api``.
    push_rules: Any = None
    #: Outgoing transactions (mxtwisted.federation.sender.FederationSender) and incoming ones
    #: (mxtwisted.federation.receiver.TransactionReceiver, made by the first federation listener).
    federation_sender: Any = None
    federation_receiver: Any = None
    #: Incoming EDUs (mxtwisted.federation.edus.EduHandler), the receiver's ``edu_handler``.
    federation_edus: Any = None
    #: Joins of local users to rooms of other servers (mxtwisted.federation.remote_join.RemoteJoiner).
    remote_join: Any = None
    #: Completes rooms joined with partial state (mxtwisted.federation.partial_state.PartialStateSyncer).
    partial_state: Any = None
    #: Invites of remote users, knocks and rejections over federation (mxtwisted.federation.remote_membership).
    remote_membership: Any = None
    #: Questions to other servers for clients: profiles, directories, hierarchies
    #: (mxtwisted.federation.queries.FederationQueries); space hierarchies (mxtwisted.rooms.hierarchy.RoomHierarchy,
    #: one per server: it keeps the pagination sessions); OpenID tokens (mxtwisted.handlers.openid.OpenIdHandler).
    federation_queries: Any = None
    hierarchy: Any = None
    openid: Any = None


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the administrator."""


class HomeserverService(MultiService):
    """The running homeserver: storage, modules and HTTP listeners."""

    def __init__(
        self,
        reactor: Any,
        config: HomeserverConfig,
        signing_keys: list,
        modules: list[LoadedModule],
        on_fatal: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.signing_keys = signing_keys
        self.modules = modules
        self.storage: Any = None
        self.components: Optional[ClientComponents] = None
        self._jobs: list[LoopingCall] = []
        self._job_runs: set[defer.Deferred] = set()
        self.sites: list[MatrixSite] = []
        self.ports: list[IListeningPort] = []
        self._on_fatal = on_fatal
        #: Fires with this service once every listener accepts connections.
        self.ready: defer.Deferred = defer.Deferred()
        self._start_d: Optional[defer.Deferred] = None
        #: The certificate and key of every TLS listener; replaced in place by :meth:`reload_tls`.
        self.tls: Optional[ReloadableServerTLS] = None

    # -- start ----------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._start_d = defer.ensureDeferred(self._start())
        self._start_d.addCallbacks(self._started, self._start_failed)

    async def _start(self) -> None:
        from mxtwisted.storage.sql import open_storage  # imported late: keeps `twistd --help` fast

        try:
            self.storage = await open_storage(self.reactor, self.config.database)
        except Exception as e:
            raise StartupError(f"cannot open the database: {e}") from e
        try:
            await self.storage.check_server_name(self.config.server_name)
        except Exception as e:
            raise StartupError(str(e)) from e
        self.components = self._build_components()
        for module in self.modules:
            if module.implements(IModuleLifecycle):
                try:
                    await defer.maybeDeferred(module.instance.on_start)
                except Exception as e:
                    raise StartupError(f"module {module.name!r} failed to start: {e}") from e
        for listener in self.config.listeners:
            await self._listen(listener)
        self._start_background_jobs()

    def _start_background_jobs(self) -> None:
        """Periodic housekeeping: expire UIA sessions (releasing reserved registration tokens)."""
        components = self.components
        assert components is not None

        async def expire() -> None:
            try:
                await components.uia.expire_sessions()
            except Exception:
                log.failure("Expiring UIA sessions failed")

        def run() -> defer.Deferred:
            d = defer.ensureDeferred(expire())
            self._job_runs.add(d)
            d.addBoth(lambda r: (self._job_runs.discard(d), r)[1])
            return d

        job = LoopingCall(run)
        job.clock = self.reactor
        job.start(3600, now=True)
        self._jobs.append(job)

    def _started(self, _: Any) -> None:
        for port in self.ports:
            address = port.getHost()
            log.info("Listening on {host}:{port}", host=address.host, port=address.port)
        log.info("matrixhs is ready for {server_name}", server_name=self.config.server_name)
        self.ready.callback(self)

    def _start_failed(self, failure: Any) -> None:
        message = failure.getErrorMessage() if failure.check(StartupError) else f"unexpected error: {failure.value!r}"
        if not failure.check(StartupError):
            log.failure("Start-up failed", failure)
        log.critical("Start-up failed: {message}", message=message)
        self.ready.errback(failure)
        if self._on_fatal is not None:
            self._on_fatal(message)

    def _build_components(self) -> ClientComponents:
        """Every handler, wired explicitly from the storage and the configuration."""
        cfg = self.config
        storage = self.storage
        hasher = PasswordHasher(self.reactor, rounds=cfg["bcrypt_rounds"], pepper=cfg["password_config"]["pepper"])
        providers: list[Any] = [m.instance for m in self.modules if m.implements(IAuthProvider)]
        if cfg["password_config"]["enabled"] and cfg["password_config"]["localdb_enabled"]:
            providers.append(LocalPasswordProvider(storage.users, hasher))
        chain = AuthProviderChain(providers, password_enabled=cfg["password_config"]["enabled"])
        uia = UserInteractiveAuth(storage.uia, self.reactor, cfg["ui_auth_session_lifetime"])
        install_stages(uia, cfg.server_name, self.reactor, storage.users, chain, storage.registration_tokens)
        ratelimiters = {
            "login_address": Ratelimiter(self.reactor, cfg.rate_limit("rc_login", "address")),
            "login_account": Ratelimiter(self.reactor, cfg.rate_limit("rc_login", "account")),
            "login_failed": Ratelimiter(self.reactor, cfg.rate_limit("rc_login", "failed_attempts")),
            "registration": Ratelimiter(self.reactor, cfg.rate_limit("rc_registration")),
            "registration_token_validity": Ratelimiter(self.reactor, cfg.rate_limit("rc_registration_token_validity")),
            "message": Ratelimiter(self.reactor, cfg.rate_limit("rc_message")),
        }
        notifier = Notifier(self.reactor)
        engine = RoomEngine(self.reactor, cfg.server_name, self.signing_keys[0], storage.events, notifier)
        membership = MembershipHandler(engine, storage.profiles)
        profile = ProfileHandler(cfg.server_name, storage.users, storage.profiles)
        profile.add_profile_change_listener(membership.on_profile_change)
        components = ClientComponents(
            notifier=notifier,
            rooms=engine,
            membership=membership,
            room_creator=RoomCreator(engine, membership, cfg.default_room_version),
            room_reader=RoomReader(engine, self.reactor),
            profile=profile,
            auth=Authenticator(storage.tokens, self.reactor, storage.devices),
            hasher=hasher,
            providers=chain,
            sessions=SessionIssuer(
                self.reactor,
                storage.devices,
                storage.tokens,
                chain,
                refreshable_lifetime_ms=cfg["refreshable_access_token_lifetime"],
                refresh_token_lifetime_ms=cfg["refresh_token_lifetime"],
                nonrefreshable_lifetime_ms=cfg["nonrefreshable_access_token_lifetime"],
            ),
            uia=uia,
            registration=RegistrationHandler(cfg.server_name, self.reactor, storage.users, storage.profiles, hasher),
            ratelimiters=ratelimiters,
        )
        components.account = AccountHandler(
            storage.users,
            storage.devices,
            storage.tokens,
            storage.profiles,
            storage.account_data,
            components.sessions,
            chain,
            hasher,
            password_change_enabled=cfg["password_config"]["enabled"] and cfg["password_config"]["localdb_enabled"],
        )
        # -- rooms: spam checkers and room policies (modules) -----------------------------
        components.policies = ModulePolicies.from_modules(self.modules)
        components.policies.install(engine, components.room_creator, membership)
        self._build_ephemeral(components)
        # -- federation: discovery, signed requests, keyring, request authentication -------
        from mxtwisted.federation import build_federation
        from mxtwisted.storage.server_keys_store import ServerKeyStore

        try:
            components.federation = build_federation(
                self.reactor, cfg, self.signing_keys, parse_old_signing_keys(cfg["old_signing_keys"]),
                store=ServerKeyStore(storage.db),
            )
        except Exception as e:  # e.g. an unreadable federation_custom_ca_list file
            raise StartupError(str(e)) from e
        from mxtwisted.federation.remote_join import RemoteJoiner

        components.remote_join = RemoteJoiner(
            engine, components.federation.client, components.federation.keyring, self.signing_keys[0], storage.profiles
        )
        # -- federation: backfill (/messages going back past our earliest event asks the room's servers) --
        from mxtwisted.federation.backfill import Backfiller

        backfiller = Backfiller(engine, components.federation.client, components.remote_join._checked_pdu, self.reactor)
        components.room_reader.backfill = backfiller.backfill
        from mxtwisted.federation.remote_membership import RemoteMemberships

        # Invites of remote users, knocks on and rejections of remote rooms (make_knock, v2 invite, make_leave).
        components.remote_membership = RemoteMemberships(
            engine, components.federation.client, components.federation.keyring, self.signing_keys[0],
            components.remote_join, storage.profiles,
        )
        membership.remote_invites = components.remote_membership
        self._build_queries(components)
        # -- federation: outgoing transactions (each new local event goes to the servers in its room) --
        from mxtwisted.federation.sender import FederationSender
        from mxtwisted.storage.federation_queue import FederationQueueStore

        components.federation_sender = FederationSender(
            self.reactor, cfg.server_name, components.federation.client, FederationQueueStore(storage.db), storage.events
        )
        engine.add_listener(components.federation_sender.on_new_event)
        components.federation_sender.setServiceParent(self)
        # -- federation: joins with partial state; the full state is fetched in the background ------
        from mxtwisted.federation.partial_state import PartialStateSyncer

        syncer = PartialStateSyncer(self.reactor, engine, components.federation.client, components.federation.keyring)
        syncer.setServiceParent(self)
        components.partial_state = syncer
        components.remote_join.partial_joins = cfg["federation_partial_state_joins"]
        components.remote_join.on_partial_join = syncer.complete
        components.federation_sender.extra_destinations = engine.partial_state_servers
        # -- federation: typing, receipts and presence both ways (EDUs) ----------------------
        from mxtwisted.federation.edus import EduHandler, EduSender

        EduSender(
            self.reactor, cfg.server_name, components.federation_sender, storage.events, engine,
            components.typing, components.receipts, components.presence,
        ).setServiceParent(self)
        components.federation_edus = EduHandler(
            self.reactor, engine, components.typing, components.receipts, components.presence
        )
        return components

    def _build_queries(self, c: ClientComponents) -> None:
        # -- federation queries for clients (profiles, directories, spaces), OpenID tokens ----
        from mxtwisted.federation.queries import FederationQueries
        from mxtwisted.handlers.openid import OpenIdHandler
        from mxtwisted.rooms.directory import RoomDirectory
        from mxtwisted.rooms.hierarchy import RoomHierarchy
        from mxtwisted.storage.openid import OpenIdTokenStore

        c.federation_queries = FederationQueries(c.federation.client, self.config.server_name)
        c.profile.set_remote_profile_query(c.federation_queries.profile)
        c.hierarchy = RoomHierarchy(c.rooms, RoomDirectory(c.rooms, c.policies), c.federation_queries)
        c.openid = OpenIdHandler(self.reactor, self.config.server_name, OpenIdTokenStore(self.storage.db))
        c.account.add_deactivation_hook(lambda user_id, erase: c.openid.store.delete_user_tokens(user_id))

    def _build_ephemeral(self, c: ClientComponents) -> None:
        # -- typing, receipts, read markers, presence -------------------------------------
        from mxtwisted.ephemeral.presence import PresenceHandler
        from mxtwisted.ephemeral.receipts import ReceiptsHandler
        from mxtwisted.ephemeral.typing import TypingHandler

        presence_cfg = self.config["presence"]
        c.typing = TypingHandler(self.reactor, c.notifier, c.rooms)
        c.receipts = ReceiptsHandler(self.reactor, c.notifier, c.rooms, self.storage.receipts, self.storage.account_data)
        c.presence = PresenceHandler(
            self.reactor,
            c.notifier,
            c.rooms,
            self.storage.presence,
            self.storage.users,
            self.config.server_name,
            enabled=presence_cfg["enabled"],
            idle_timeout_ms=presence_cfg["idle_timeout"],
            sync_online_timeout_ms=presence_cfg["sync_online_timeout"],
            last_active_granularity_ms=presence_cfg["last_active_granularity"],
            include_offline_users_on_sync=presence_cfg["include_offline_users_on_sync"],
        )
        # Services of this MultiService: their timers stop with the server.
        c.typing.setServiceParent(self)
        c.presence.setServiceParent(self)
        c.account.add_deactivation_hook(c.presence.on_deactivated)
        c.ratelimiters["presence"] = Ratelimiter(self.reactor, self.config.rate_limit("rc_presence", "per_user"))
        c.sync_sources += [c.typing.source, c.receipts.source, c.presence.source]
        c.set_presence = c.presence.set_presence

    def build_client_api(self, router: Router) -> None:
        """Register the Client-Server API endpoints (one block per API area)."""
        c = self.components
        assert c is not None
        # -- accounts: registration ------------------------------------------------
        from mxtwisted.api.client.register import RegisterResource

        RegisterResource(
            self.config,
            self.reactor,
            c.registration,
            c.sessions,
            c.uia,
            self.storage.registration_tokens,
            ratelimiter=c.ratelimiters["registration"],
            # Clients check names as the user types: about one check a second per address (as Synapse).
            availability_ratelimiter=Ratelimiter(self.reactor, RateLimit(per_second=1.0, burst_count=10)),
            token_validity_ratelimiter=c.ratelimiters["registration_token_validity"],
        ).register(router)
        self.build_admin_api(router)

        # -- accounts: login, logout, refresh, whoami --------------------------------
        from mxtwisted.api.client.account_whoami import WhoamiResource
        from mxtwisted.api.client.login import LoginResource, LoginTokenResource, RefreshResource
        from mxtwisted.api.client.logout import LogoutResource
        from mxtwisted.handlers.login import LoginHandler, client_well_known

        via_session = self.config["login_via_existing_session"]
        login = LoginHandler(
            self.config.server_name,
            self.reactor,
            self.storage.users,
            self.storage.devices,
            self.storage.tokens,
            c.providers,
            c.sessions,
            c.registration,
            address_limiter=c.ratelimiters["login_address"],
            account_limiter=c.ratelimiters["login_account"],
            failed_limiter=c.ratelimiters["login_failed"],
            well_known=client_well_known(self.config.public_baseurl, self.config["extra_well_known_client_content"]),
            login_token_lifetime_ms=via_session["token_timeout"],
            get_login_token_enabled=via_session["enabled"],
        )
        LoginResource(login).register(router)
        RefreshResource(c.sessions).register(router)
        LogoutResource(c.auth, login).register(router)
        WhoamiResource(c.auth).register(router)
        if via_session["enabled"]:
            # The spec recommends at most one token a minute (as Synapse: per user, after UIA).
            get_token_limiter = Ratelimiter(self.reactor, RateLimit(per_second=1 / 60, burst_count=1))
            LoginTokenResource(
                c.auth, c.uia, c.providers, login, get_token_limiter, require_ui_auth=via_session["require_ui_auth"]
            ).register(router)
        # -- accounts: devices, password, deactivate, 3pid, capabilities ---------------
        from mxtwisted.api.client.account import AccountResource, ThreepidResource
        from mxtwisted.api.client.capabilities import CapabilitiesResource
        from mxtwisted.api.client.devices import DevicesResource

        DevicesResource(c.auth, c.uia, c.account).register(router)
        AccountResource(c.auth, c.uia, c.account).register(router)
        ThreepidResource(c.auth).register(router)
        CapabilitiesResource(c.auth, self.config.raw, self.config.default_room_version).register(router)
        # -- accounts: profiles, account data, tags ------------------------------------
        from mxtwisted.api.client.account_data import AccountDataResource
        from mxtwisted.api.client.profile import ProfileResource
        from mxtwisted.api.client.tags import TagsResource

        ProfileResource(c.auth, c.profile, self.config["require_auth_for_profile_requests"]).register(router)
        account_data_resource = AccountDataResource(c.auth, self.storage.account_data)
        account_data_resource.register(router)
        TagsResource(c.auth, self.storage.account_data).register(router)
        # -- push rules ------------------------------------------------------------------
        from mxtwisted.api.client.push_rules import PushRulesResource
        from mxtwisted.push.handler import PushRulesHandler
        from mxtwisted.storage.push_rules import PushRuleStore

        if c.push_rules is None:
            # Once per server (build_client_api runs for each client listener).
            c.push_rules = PushRulesHandler(PushRuleStore(self.storage.db), self.storage.account_data)
            c.account.add_deactivation_hook(lambda user_id, erase: c.push_rules.delete_user(user_id) if erase else None)
        account_data_resource.set_push_rules_source(c.push_rules.get_ruleset_json)
        PushRulesResource(c.auth, c.push_rules).register(router)
        # -- rooms: create, send, state, read, membership -------------------------------
        RoomsResource(
            c.auth, c.room_creator, c.membership, c.room_reader, c.ratelimiters["message"],
            remote_join=c.remote_join, remote_membership=c.remote_membership,
        ).register(router)
        # -- rooms: moderation, redaction, context, directory ------------------------------
        from mxtwisted.api.client.context import ContextResource
        from mxtwisted.api.client.directory import DirectoryResource
        from mxtwisted.api.client.redaction import RedactionResource
        from mxtwisted.api.client.room_moderation import RoomModerationResource
        from mxtwisted.rooms.directory import RoomDirectory

        RoomModerationResource(
            c.auth, c.membership, c.room_reader, remote_membership=c.remote_membership, remote_join=c.remote_join
        ).register(router)
        RedactionResource(c.auth, c.rooms, c.room_reader, c.ratelimiters["message"]).register(router)
        ContextResource(c.auth, c.room_reader).register(router)
        DirectoryResource(
            c.auth,
            RoomDirectory(c.rooms, c.policies, resolve_remote_alias=c.remote_join.resolve_alias if c.remote_join else None),
            remote=c.federation_queries,
        ).register(router)
        # -- rooms: spaces hierarchy, openid ----------------------------------------------------
        from mxtwisted.api.client.hierarchy import HierarchyResource
        from mxtwisted.api.client.openid import OpenIdResource

        HierarchyResource(c.auth, c.hierarchy).register(router)
        OpenIdResource(c.auth, c.openid).register(router)
        # -- typing, receipts, read markers, presence -------------------------------------
        from mxtwisted.api.client.presence import PresenceResource
        from mxtwisted.api.client.receipts import ReceiptsResource
        from mxtwisted.api.client.typing import TypingResource

        TypingResource(c.auth, c.typing, c.presence).register(router)
        ReceiptsResource(c.auth, c.receipts, c.presence).register(router)
        PresenceResource(c.auth, c.presence, c.ratelimiters["presence"]).register(router)
        # -- sync and filters ------------------------------------------------------------
        self._build_sync(router)

    def _build_sync(self, router: Router) -> None:
        from mxtwisted.api.client.sync import SyncResource
        from mxtwisted.storage.filters import FilterStore
        from mxtwisted.storage.sync import SyncStore
        from mxtwisted.sync.handler import SyncHandler

        c = self.components
        assert c is not None
        if c.sync is None:
            # Once per server (build_client_api runs for each client listener).
            account_data = self.storage.account_data
            account_data.add_listener(
                lambda user_id, _: c.notifier.notify_users("account_data", account_data.stream.current, [user_id])
            )

            def set_presence(user_id: str, state: Optional[str]) -> Any:
                setter = c.set_presence  # looked up per request: whoever provides presence may set it late
                return setter(user_id, state) if setter is not None else None

            c.sync = SyncHandler(
                self.reactor, c.room_reader, self.storage.events, SyncStore(self.storage.db), account_data,
                c.notifier, c.sync_sources, presence_setter=set_presence,
                push_rules=c.push_rules.get_ruleset_json if c.push_rules is not None else None,
            )
            c.filters = FilterStore(self.storage.db)
            c.account.add_deactivation_hook(lambda user_id, erase: c.filters.delete_user_filters(user_id))
        SyncResource(c.auth, c.sync, c.filters).register(router)

    def build_admin_api(self, router: Router) -> None:
        """Register Synapse-compatible admin endpoints (``/_synapse/admin/...``), served on client listeners."""
        c = self.components
        assert c is not None
        # -- admin: shared-secret registration, registration tokens --------------------
        from mxtwisted.api.admin.register import SharedSecretRegistrationResource, shared_secret_from_config
        from mxtwisted.api.admin.registration_tokens import RegistrationTokensAdminResource
        from mxtwisted.config import ConfigError

        try:
            shared_secret = shared_secret_from_config(self.config)
        except ConfigError as e:
            raise StartupError(str(e)) from e
        SharedSecretRegistrationResource(
            shared_secret, self.reactor, c.registration, c.sessions, self.config.server_name
        ).register(router)
        RegistrationTokensAdminResource(c.auth, self.storage.users, self.storage.registration_tokens, self.reactor).register(
            router
        )

    def build_router(self, listener: ListenerConfig) -> Router:
        """The routes a listener serves, from its ``resources`` names."""
        router = Router()
        HealthResource(self.storage.ping if self.storage is not None else None).register(router)
        if listener.serves("client"):
            ClientVersionsResource().register(router)
            self.build_client_api(router)
            WellKnownResource(
                self.config.server_name,
                self.config.public_baseurl,
                self.config["serve_server_wellknown"],
                self.config["extra_well_known_client_content"],
            ).register(router)
        if listener.serves("federation"):
            FederationVersionResource().register(router)
            if getattr(self.components, "federation", None) is not None:
                from mxtwisted.api.federation.rooms import register_served_federation

                register_served_federation(
                    router,
                    self.components,
                    self.signing_keys[0],
                    allow_public_rooms=self.config["allow_public_rooms_over_federation"],
                    allow_profile_lookup=self.config["allow_profile_lookup_over_federation"],
                    users=self.storage.users,
                )
                from mxtwisted.api.federation.transactions import register_transactions

                register_transactions(router, self.components)
        if listener.serves("federation") or listener.serves("keys"):
            server_keys = ServerKeyResource(
                self.reactor,
                self.config.server_name,
                self.signing_keys,
                parse_old_signing_keys(self.config["old_signing_keys"]),
                self.config["key_refresh_interval"],
            )
            server_keys.register(router)
            if self.components is not None and self.components.federation is not None:
                from mxtwisted.api.keys.query import KeyQueryResource

                KeyQueryResource(
                    self.reactor,
                    self.config.server_name,
                    self.signing_keys[0],
                    self.components.federation.keyring,
                    server_keys.response,
                ).register(router)
        return router

    async def _listen(self, listener: ListenerConfig) -> None:
        site = MatrixSite(
            MatrixResource(self.build_router(listener)),
            name=f"{'https' if listener.tls else 'http'}:{listener.port}",
            max_request_size=self.config.max_request_size,
            x_forwarded=listener.x_forwarded,
            reactor=self.reactor,
        )
        self.sites.append(site)
        tls_options = None
        if listener.tls:
            if self.tls is None:
                try:
                    self.tls = ReloadableServerTLS(self.config.tls_certificate_path, self.config.tls_private_key_path)
                except Exception as e:
                    raise StartupError(str(e)) from e
            tls_options = self.tls
        errors = []
        bound = 0
        for address in listener.bind_addresses:
            ipv6 = ":" in address
            if tls_options is not None:
                endpoint: Any = SSL4ServerEndpoint(self.reactor, listener.port, tls_options, interface=address)
            elif ipv6:
                endpoint = TCP6ServerEndpoint(self.reactor, listener.port, interface=address)
            else:
                endpoint = TCP4ServerEndpoint(self.reactor, listener.port, interface=address)
            try:
                self.ports.append(await endpoint.listen(site))
                bound += 1
            except Exception as e:
                errors.append(f"{address}:{listener.port}: {e}")
        if errors and bound == 0:
            raise StartupError("cannot listen on " + "; ".join(errors))
        for error in errors:
            # As Synapse: binding both '::' and '0.0.0.0' fails on dual-stack hosts; one is enough.
            log.warn("Could not listen on {error} (other addresses of this listener are bound)", error=error)

    # -- reload (SIGHUP) ------------------------------------------------
    def reload_tls(self) -> bool:
        """Re-read the TLS certificate and key, for renewals (certbot) without a restart.

        New connections get the new certificate; open ones keep theirs. A file
        that cannot be loaded is logged and the old certificate stays in use:
        a botched renewal must not take the server off the air. Returns whether
        a new certificate is in use.
        """
        if self.tls is None:
            log.info("No TLS listener: no certificate to reload")
            return False
        try:
            self.tls.reload()
        except TLSConfigError as e:
            log.error("TLS certificate reload failed, keeping the current certificate: {error}", error=str(e))
            return False
        except Exception:
            log.failure("TLS certificate reload failed, keeping the current certificate")
            return False
        cert = self.tls.certificate()
        log.info(
            "Reloaded the TLS certificate {path} (subject {subject}, expires {expires})",
            path=self.tls.cert_path,
            subject=cert.get_subject().CN,
            expires=(cert.get_notAfter() or b"?").decode(),
        )
        return True

    # -- stop -----------------------------------------------------------
    def stopService(self) -> defer.Deferred:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._start_d is not None and not self._start_d.called:
            await self._start_d
        for job in self._jobs:
            if job.running:
                job.stop()
        self._jobs = []
        # A housekeeping run in progress finishes before the database closes.
        await defer.DeferredList(list(self._job_runs))
        ports, self.ports = self.ports, []
        await defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        for site in self.sites:
            site.stopping = True
        waits = [site.wait_idle() for site in self.sites]
        if waits:
            idle = defer.DeferredList(waits)
            timeout = self.reactor.callLater(SHUTDOWN_GRACE_SECONDS, idle.cancel)
            try:
                await idle
            except defer.CancelledError:
                log.warn("Shutting down with requests still in flight")
            if timeout.active():
                timeout.cancel()
        for site in self.sites:
            site.close_connections()
        for module in reversed(self.modules):
            if module.implements(IModuleLifecycle):
                try:
                    await defer.maybeDeferred(module.instance.on_stop)
                except Exception:
                    log.failure("Module {name} failed to stop", name=module.name)
        await defer.maybeDeferred(super().stopService)
        if self.components is not None:
            self.components.hasher.stop()
            if self.components.federation is not None:
                await self.components.federation.close()
        if self.storage is not None:
            storage, self.storage = self.storage, None
            await storage.close()
        log.info("matrixhs stopped")


def make_homeserver(reactor: Any, config: HomeserverConfig, on_fatal: Optional[Callable[[str], None]] = None) -> HomeserverService:
    """Build the homeserver from its configuration. Raises StartupError for problems found before the reactor runs."""
    try:
        signing_keys = load_signing_keys(config.signing_key_path)
        parse_old_signing_keys(config["old_signing_keys"])
    except Exception as e:
        raise StartupError(str(e)) from e
    try:
        modules = load_modules(config.modules, config.server_name, config.public_baseurl, reactor)
    except Exception as e:
        raise StartupError(str(e)) from e
    if config.media_store_path:
        try:
            os.makedirs(config.media_store_path, exist_ok=True)
        except OSError as e:
            raise StartupError(f"media_store_path {config.media_store_path!r}: {e.strerror}") from e
    return HomeserverService(reactor, config, signing_keys, modules, on_fatal=on_fatal)


def exit_on_fatal(reactor: Any, pidfile: Optional[str]) -> Callable[[str], None]:
    """A fatal-start handler for twistd: one line on stderr, stop the reactor, exit 1.

    twistd has no way to return a non-zero exit code after the reactor started,
    so the process exits from the last shutdown trigger, after the services
    have stopped.
    """

    def fatal(message: str) -> None:
        print(f"matrixhs: error: {message}", file=sys.__stderr__, flush=True)

        def _exit() -> None:
            if pidfile and os.path.exists(pidfile):
                try:
                    os.unlink(pidfile)
                except OSError:
                    pass
            os._exit(1)

        reactor.addSystemEventTrigger("after", "shutdown", _exit)
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    return fatal
