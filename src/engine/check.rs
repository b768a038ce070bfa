//! CheckAndRecord: validate, canonicalise, run the funnel under the scope lock, then turn the
//! finding into a verdict and (for NEW) a durable reservation.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::identical::IdenticalGuard;
use super::reservation::{self, SeenVersion};
use super::{CheckOutcome, CheckRequest, Engine, RetryIntent, Stripe, Verdict, validate};
use crate::canonical::{CanonError, CanonicalCall};
use crate::clock::Millis;
use crate::config::{
    BorderlinePolicy, LeaseExpiry, ScopeMode, SessionSettings, ToolMode, canon_policy,
};
use crate::embed::WordVectors;
use crate::error::IdemError;
use crate::funnel::{
    CheckContext, Finding, Found, FunnelResult, FuzzyScan, MatchFilter, PreparedText,
    ResourceWindow, StageKind, StageOutcome, StageReport, StopReason, fuzzy_scan, load_candidates,
};
use crate::record::{CallStatus, Record, RepeatOutcome, ResourceMark, match_scope};
use crate::store::{Candidate, StatsDelta};

/// A call ready for the funnel.
struct Prepared {
    req: CheckRequest,
    call: CanonicalCall,
    scope: String,
    settings: Arc<SessionSettings>,
    mode: ToolMode,
    deadline: Instant,
    /// How long the check may wait past `deadline` for an identical check's record: the
    /// client's transport deadline, else `IDENTICAL_WAIT` past the deadline.
    identical_until: Instant,
    /// When the embedding must be ready: the deadline less a reserve for the stages after it
    /// and the durable write of a NEW, so the whole check ends inside its budget.
    embed_deadline: Instant,
    /// The embedder admits the check only when its expected wait ends by then.
    embed_admit_by: Instant,
    /// The scope version this attempt read (stores several instances share).
    seen: SeenVersion,
    /// The resource the call acts on and the pair's other tool, for a tool with an inverse.
    resource: Option<(String, String)>,
    /// The call's free text, prepared when first compared.
    query: OnceLock<Arc<PreparedText>>,
}

impl Prepared {
    /// The call's free text, prepared (once).
    fn query_text(&self) -> &Arc<PreparedText> {
        self.query
            .get_or_init(|| Arc::new(PreparedText::new(self.call.free_text_joined())))
    }
}

impl Engine {
    /// Decides whether a call repeats an earlier one, and records it when it is new.
    pub async fn check(&self, req: CheckRequest) -> Result<CheckOutcome, IdemError> {
        let started = std::time::Instant::now();
        let _permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            IdemError::Shed(
                crate::error::ShedReason::Concurrency,
                format!(
                    "server is at its limit of {} concurrent checks; retry with backoff",
                    self.config.max_concurrent_checks
                ),
            )
        })?;
        let p = match self.prepare(req).await? {
            Ok(p) => p,
            Err(off) => return Ok(off),
        };
        // Store calls of this check end by its deadline (a stalled shared store included).
        let mut out = crate::store::deadline::within(p.deadline, async {
            if p.req.retry == RetryIntent::Resample {
                self.resample(&p).await
            } else {
                self.run_funnel(&p).await
            }
        })
        .await?;
        out.total_micros = started.elapsed().as_micros() as u64;
        if out.verdict == Verdict::New && !out.call_id.is_empty() {
            out.check_id = out.call_id.clone();
        } else {
            out.check_id = uuid::Uuid::now_v7().to_string();
            if !out.call_id.is_empty() {
                self.log_check(&p.req, &out, p.settings.ttl_ms_for(&p.call.tool));
            }
        }
        tracing::debug!(verdict = out.verdict.name(), tool = %p.call.tool, micros = out.total_micros, "check");
        Ok(out)
    }

    /// Validates and canonicalises; `Ok(Err(outcome))` for tools whose mode is `off`.
    async fn prepare(
        &self,
        req: CheckRequest,
    ) -> Result<Result<Prepared, CheckOutcome>, IdemError> {
        validate::name("tenant", &req.tenant)?;
        validate::name("session", &req.session)?;
        validate::name("tool", &req.tool)?;
        if let Some(k) = &req.idempotency_key {
            validate::name("idempotency_key", k)?;
        }
        validate::payload(
            "arguments_json",
            &req.arguments_json,
            self.config.max_payload_bytes,
        )?;
        let settings = self.settings(&req.tenant, &req.session).await?;
        if req.deadline_ms == Some(0) {
            return Err(IdemError::DeadlineExceeded(
                "the request's deadline (deadline_ms = 0) has already passed".into(),
            ));
        }
        if req.transport_deadline_ms == Some(0) {
            return Err(IdemError::DeadlineExceeded(
                "the request's gRPC deadline has already passed".into(),
            ));
        }
        // The transport's deadline only ever tightens the request's or the session's.
        let deadline_ms = u64::from(req.deadline_ms.unwrap_or(settings.deadline_ms))
            .min(req.transport_deadline_ms.unwrap_or(u64::MAX));
        let now = Instant::now();
        let deadline = now + Duration::from_millis(deadline_ms);
        let reserve = (Duration::from_millis(deadline_ms) / 4).min(MAX_WRITE_RESERVE);
        let embed_deadline = deadline - reserve;
        let budget = Duration::from_millis(deadline_ms);
        let embed_admit_by = embed_deadline
            .min(now + budget.mul_f64(self.config.semantic.max_embed_wait_share.clamp(0.0, 1.0)));
        let policy = settings.tool_policy(&req.tool);
        let pair = settings.inverse_pair(&req.tool);
        let mut canon = canon_policy(&policy, &self.config.ignored_metadata_fields);
        // Resource fields compare exactly: they are identity, whatever their values look like.
        if let Some((_, fields)) = &pair {
            canon.identity_fields.extend(fields.iter().cloned());
        }
        // From the text, so numbers keep every digit (a serde_json Value rounds past 2^64).
        let call = CanonicalCall::from_json(&req.tool, &req.arguments_json, &canon).map_err(
            |e| match e {
                CanonError::NotAnObject(_)
                | CanonError::InvalidJson(_)
                | CanonError::TooDeep(_)
                | CanonError::NumberOutOfRange(_) => {
                    IdemError::InvalidArgument(format!("arguments_json: {e}"))
                }
            },
        )?;
        if policy.mode == ToolMode::Off {
            let reason = format!(
                "tool {:?} has mode off: never deduplicated, not recorded",
                call.tool
            );
            return Ok(Err(CheckOutcome {
                stop: StopReason::Mode,
                ..CheckOutcome::new(Verdict::New, String::new(), CallStatus::InProgress, reason)
            }));
        }
        let scope = match_scope(
            &req.tenant,
            &req.session,
            settings.scope == ScopeMode::Tenant,
        );
        let resource = pair.and_then(|(inverse, fields)| {
            call.resource_fingerprint((&call.tool, &inverse), &fields)
                .map(|key| (key, inverse))
        });
        let identical_until = match req.transport_deadline_ms {
            Some(ms) => now + Duration::from_millis(ms),
            None => deadline + IDENTICAL_WAIT,
        };
        Ok(Ok(Prepared {
            mode: policy.mode,
            req,
            call,
            scope,
            settings,
            deadline,
            identical_until,
            embed_deadline,
            embed_admit_by,
            seen: SeenVersion::default(),
            resource,
            query: OnceLock::new(),
        }))
    }

    async fn run_funnel(&self, p: &Prepared) -> Result<CheckOutcome, IdemError> {
        let stripe = self.stripe(&p.scope);
        let identical = self.identical.enter(&p.scope, &p.call.exact_hash);
        let inserts_settled = stripe.inserts.load(Ordering::Acquire);
        if let Some(out) = self.settle_without_lock(p).await? {
            return Ok(out);
        }
        // Attempts that let go of the lock to embed calls recorded meanwhile (lost races with
        // other instances do not count: each of those reads and embeds afresh anyway).
        let mut embed_retries = 0;
        let may_retry =
            |retries: u32| retries < MAX_EMBED_RETRIES && Instant::now() < p.embed_deadline;
        loop {
            self.read_scope_version(&p.scope, &p.seen).await?;
            // After the version: a call of the inverse recorded by another instance since is
            // either seen here or makes this attempt's reservation fail.
            let window = self.window(p).await?;
            let before = self.before_lock(p, stripe, window.as_ref()).await?;
            let guard = match self
                .lock_or_settle(p, stripe, &identical, inserts_settled)
                .await?
            {
                Waited::Locked(guard) => guard,
                Waited::Settled(out) => return Ok(*out),
                Waited::TimedOut => {
                    return match self.settle_without_lock(p).await? {
                        Some(out) => Ok(out),
                        None => Err(IdemError::DeadlineExceeded(
                            "no verdict before the deadline: other checks of this scope held \
                             its lock and none of them recorded this call; retry"
                                .into(),
                        )),
                    };
                }
            };
            let now = self.clock.now_ms();
            let mut ctx = self.context(p, now);
            // Read again under the lock: a call of the inverse recorded by this instance while
            // the check waited for it changes the window (and invalidates the read ahead).
            ctx.window = match &window {
                Some(_) => self.window(p).await?,
                None => None,
            };
            let embed_micros = before.embedding.as_ref().map_or(0, |(_, micros)| *micros);
            let embedded = before.embedding.is_some();
            ctx.embedding = before.embedding.map(|(v, _)| v);
            ctx.words = before.words.map(Arc::new);
            // The read ahead's fuzzy scan settled, so no embedding was made: if its match is
            // gone when the stage reads it (a NEW whose commit failed), decide again.
            let fuzzy_settled_ahead =
                matches!(&before.read_ahead, Some((_, _, scan)) if scan.settles());
            // Nothing inserted under this stripe since the read ahead: it is still complete.
            match before.read_ahead {
                Some((seen, c, scan)) if stripe.inserts.load(Ordering::Acquire) == seen => {
                    ctx.candidates = Some(c);
                    ctx.fuzzy_ahead = Some(scan);
                    ctx.none_comparable = before.none_comparable;
                }
                // Calls were recorded meanwhile. If one of them may be this call's original
                // and this check skipped its embedding (it had nothing to compare with), let
                // go of the lock and embed now: an embedding never waits under the lock.
                _ if before.may_embed
                    && before.missed.is_none()
                    && may_retry(embed_retries)
                    && self.needs_embedding(p, &mut ctx, embedded).await? =>
                {
                    embed_retries += 1;
                    continue;
                }
                _ => {}
            }
            let mut result = self.funnel.run(&mut ctx).await?;
            if fuzzy_settled_ahead
                && !embedded
                && matches!(result.finding, Finding::Pass)
                && may_retry(embed_retries)
            {
                embed_retries += 1;
                continue;
            }
            charge_embedding(&mut result, embed_micros, before.missed);
            match self.conclude(p, ctx, result, Some(guard)).await {
                // Another instance recorded a call in the scope meanwhile: decide again.
                Err(e) if reservation::lost_race(&e) => {
                    if Instant::now() < p.deadline {
                        continue;
                    }
                    return Err(reservation::out_of_time());
                }
                other => return other,
            }
        }
    }

    /// Whether an earlier call the fuzzy stage does not settle may still be this call's
    /// original and only embeddings can tell: this call's (unless `embedded`) or the earlier
    /// call's are missing. Read under the lock, on fresh candidates.
    async fn needs_embedding(
        &self,
        p: &Prepared,
        ctx: &mut CheckContext,
        embedded: bool,
    ) -> Result<bool, IdemError> {
        let Some(sim) = &self.semantic else {
            return Ok(false);
        };
        let query = p.query_text();
        let candidates = ctx.candidates().await?;
        let scan = fuzzy_scan(query, &candidates, p.settings.fuzzy_threshold, &self.texts);
        let filter = MatchFilter::new(query, &p.settings);
        let needed = !scan.settles()
            && candidates.iter().any(|c| {
                let t = self.texts.get(c);
                (!embedded || !sim.has_vector_id(&p.scope, t.vid)) && filter.may_match(&t.text)
            });
        ctx.fuzzy_ahead = Some(scan);
        Ok(needed)
    }

    /// A check whose key or exact lookup finds a live original (running or succeeded) is
    /// answered from that record, lock-free: the lock only guards the reservation of a NEW,
    /// and identical checks must not queue behind each other (a retry storm).
    async fn settle_without_lock(&self, p: &Prepared) -> Result<Option<CheckOutcome>, IdemError> {
        let mut ctx = self.context(p, self.clock.now_ms());
        ctx.window = self.window(p).await?;
        let result = self.funnel.run_certain(&mut ctx).await?;
        let Finding::Found(f) = &result.finding else {
            return Ok(None);
        };
        if !matches!(
            f.record.repeat_outcome(ctx.now),
            RepeatOutcome::Duplicate | RepeatOutcome::InFlight
        ) {
            return Ok(None);
        }
        self.conclude(p, ctx, result, None).await.map(Some)
    }

    /// Waits for the scope's lock until the deadline (at least `LOCK_GRACE`), looking again for
    /// a settling original whenever a record was inserted under the stripe since the check
    /// last looked (`inserts_settled`). Past the deadline it goes on waiting, up to
    /// `identical_until`, while an identical check is under way: that check's record answers
    /// this one, so identical checks ahead of a check never make it fail.
    async fn lock_or_settle<'a>(
        &self,
        p: &Prepared,
        stripe: &'a Stripe,
        identical: &IdenticalGuard<'_>,
        mut inserts_settled: u64,
    ) -> Result<Waited<'a>, IdemError> {
        let until = p.deadline.max(Instant::now() + LOCK_GRACE);
        // One lock future for the whole wait keeps this check's place in the lock's queue.
        let lock = stripe.lock.lock();
        tokio::pin!(lock);
        loop {
            let inserted = stripe.inserted.notified();
            tokio::pin!(inserted);
            // Registered before the count is read, so an insert meanwhile is not missed.
            inserted.as_mut().enable();
            let inserts = stripe.inserts.load(Ordering::Acquire);
            if inserts != inserts_settled {
                inserts_settled = inserts;
                if let Some(out) = self.settle_without_lock(p).await? {
                    return Ok(Waited::Settled(Box::new(out)));
                }
            }
            // Past the deadline, look again every `IDENTICAL_POLL`: an identical check that
            // ends without a record (an error) wakes no one.
            let now = Instant::now();
            let wait_until = if now < until || !identical.others_running() {
                until
            } else {
                (now + IDENTICAL_POLL).min(p.identical_until)
            };
            tokio::select! {
                biased;
                guard = &mut lock => return Ok(Waited::Locked(guard)),
                _ = &mut inserted => {}
                _ = tokio::time::sleep_until(wait_until) => {
                    if Instant::now() >= p.identical_until || !identical.others_running() {
                        return Ok(Waited::TimedOut);
                    }
                }
            }
        }
    }

    /// The work that needs no lock: the candidates and their fuzzy scan, then the embedding
    /// of the free text, only when an earlier call the fuzzy stage did not settle may be this
    /// call's original. A call with nothing to compare with is recorded without waiting for
    /// the model; its text is embedded in the background for later checks.
    async fn before_lock(
        &self,
        p: &Prepared,
        stripe: &Stripe,
        window: Option<&ResourceWindow>,
    ) -> Result<BeforeLock, IdemError> {
        let mut out = BeforeLock::default();
        let Some(sim) = &self.semantic else {
            return Ok(out);
        };
        let text = p.call.free_text_joined();
        if p.mode != ToolMode::Semantic || text.is_empty() {
            return Ok(out);
        }
        let Some(embed) = sim.embedder() else {
            return Ok(out);
        };
        out.may_embed = true;
        let inserts_seen = stripe.inserts.load(Ordering::Acquire);
        let candidates = load_candidates(
            self.store.as_ref(),
            &p.scope,
            &p.call,
            &p.settings,
            self.clock.now_ms(),
            window,
        )
        .await;
        // Whether to embed: some candidate may match whatever the cosine. The newest such
        // candidate decides it; past it only candidates without a vector are looked at, for
        // the ones to embed in the same batch as the call. The candidates' texts come
        // prepared from the text cache. A failed read ahead is retried under the lock; the
        // embedding is then needed.
        let query = p.query_text();
        let unembedded: Vec<Candidate> = match candidates {
            Ok(c) => {
                let scan = fuzzy_scan(query, &c, p.settings.fuzzy_threshold, &self.texts);
                let filter = MatchFilter::new(query, &p.settings);
                let first = if scan.settles() {
                    None
                } else {
                    c.iter()
                        .map(|c| self.texts.get(c))
                        .position(|t| filter.may_match(&t.text))
                };
                let Some(first) = first else {
                    out.none_comparable = !scan.settles();
                    out.read_ahead = Some((inserts_seen, c, scan));
                    return Ok(out);
                };
                // What other instances stored since this instance last looked (a shared
                // store's vector log): their calls need no embedding here.
                if let Err(e) = sim.catch_up(self.store.as_ref(), &p.scope).await {
                    tracing::warn!(%e, scope = %p.scope, "vector log not read: candidates this instance has no vector for are embedded again");
                }
                // Candidates that may match but were recorded without an embedding (nothing to
                // compare with then, or their backfill is still queued) are embedded with the
                // call, in the same batch.
                let unembedded = c[first..]
                    .iter()
                    .filter(|c| {
                        let t = self.texts.get(c);
                        !sim.has_vector_id(&p.scope, t.vid) && filter.may_match(&t.text)
                    })
                    .take(MAX_EMBEDDED_CANDIDATES)
                    .cloned()
                    .collect();
                out.read_ahead = Some((inserts_seen, c, scan));
                unembedded
            }
            Err(_) => Vec::new(),
        };
        let t = std::time::Instant::now();
        let query = embed.embed_words_admitted_by(text, p.embed_admit_by, p.embed_deadline);
        let others = futures::future::join_all(unembedded.iter().map(|c| {
            embed.embed_words_admitted_by(&c.free_text, p.embed_admit_by, p.embed_deadline)
        }));
        let (embedded, others) = tokio::join!(query, others);
        let micros = t.elapsed().as_micros() as u64;
        for (c, v) in unembedded.iter().zip(others) {
            match v {
                Ok((v, words)) => {
                    if let Some(w) = words {
                        self.texts.put_words(&c.id, &c.free_text, w);
                    }
                    sim.adopt(&p.scope, &c.id, v, self.store.clone()).await
                }
                Err(e) => tracing::debug!(%e, call = %c.id, "candidate not embedded"),
            }
        }
        match embedded {
            Ok((v, words)) => {
                out.embedding = Some((v, micros));
                out.words = words;
            }
            Err(IdemError::DeadlineExceeded(_)) => {
                out.missed = Some(StageReport {
                    stage: StageKind::Semantic,
                    micros,
                    outcome: StageOutcome::Deadline,
                    best_score: None,
                    eligible_score: None,
                    explain: None,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// A fresh funnel context for a prepared call at `now`.
    fn context(&self, p: &Prepared, now: Millis) -> CheckContext {
        CheckContext {
            call: p.call.clone(),
            idempotency_key: p.req.idempotency_key.clone(),
            match_scope: p.scope.clone(),
            settings: p.settings.clone(),
            mode: p.mode,
            now,
            deadline: p.deadline,
            store: self.store.clone(),
            texts: self.texts.clone(),
            query: p
                .query
                .get()
                .cloned()
                .map(OnceLock::from)
                .unwrap_or_default(),
            candidates: None,
            fuzzy_ahead: None,
            embedding: None,
            words: None,
            none_comparable: false,
            nearest: None,
            window: None,
        }
    }

    /// Turns the funnel's finding into a verdict; reserves a record for NEW (`lock` is the
    /// scope's, held by the caller, let go as soon as the NEW is registered).
    async fn conclude(
        &self,
        p: &Prepared,
        ctx: CheckContext,
        result: FunnelResult,
        lock: Option<ScopeLock<'_>>,
    ) -> Result<CheckOutcome, IdemError> {
        let FunnelResult {
            finding,
            stop,
            reports,
        } = result;
        // The key its exact original was recorded under (the key-hygiene advisory).
        let original_key = match &finding {
            Finding::Found(f) | Finding::Borderline(f) if f.stage == StageKind::Exact => {
                f.record.idempotency_key.clone()
            }
            _ => None,
        };
        let now = ctx.now;
        let mut out = match finding {
            Finding::Pass => {
                let mut why = match stop {
                    StopReason::Deadline => {
                        "no earlier call matched in the stages run before the deadline"
                    }
                    _ => "no earlier call matched",
                }
                .to_string();
                if let Some(inv) = ctx.window.as_ref().and_then(|w| w.closed_by.as_ref()) {
                    why.push_str(&format!(
                        "; {inv} acted on this resource last, which ended the window of this \
                         tool's earlier calls on it"
                    ));
                }
                self.reserve(p, &ctx, lock, NewCall::fresh(), &why).await?
            }
            Finding::Found(f) => self.repeat_of(p, &ctx, f, lock).await?,
            Finding::Borderline(f) => match p.settings.borderline_policy {
                BorderlinePolicy::Proceed => {
                    let why = format!(
                        "borderline {} match (score {:.3}) with call {}; policy proceed: treated as new",
                        f.stage.name(),
                        f.score,
                        f.record.id
                    );
                    self.reserve(p, &ctx, lock, NewCall::fresh(), &why).await?
                }
                BorderlinePolicy::Block => {
                    let mut o = self.repeat_of(p, &ctx, f, lock).await?;
                    o.reason = format!("borderline match; policy block: {}", o.reason);
                    o
                }
                BorderlinePolicy::Ask => {
                    let reason = format!(
                        "possible repeat of call {} ({} score {:.3}); policy ask: the caller decides. \
                         To run it anyway, check again with retry=RESAMPLE and retry_of={}",
                        f.record.id,
                        f.stage.name(),
                        f.score,
                        f.record.id
                    );
                    CheckOutcome {
                        matched: Some((f.stage, f.score)),
                        stop,
                        ..CheckOutcome::new(
                            Verdict::Borderline,
                            f.record.id.clone(),
                            f.record.status,
                            reason,
                        )
                    }
                }
            },
        };
        out.stages = reports;
        if out.stop == StopReason::Settled {
            out.stop = stop;
        }
        self.advise(
            &mut out,
            (&p.req.tenant, &p.req.session, &p.call.tool),
            (p.req.idempotency_key.as_deref(), original_key.as_deref()),
            &p.settings,
            now,
        );
        self.count(p, &out);
        Ok(out)
    }

    /// The verdict for a call whose original is `f.record`.
    async fn repeat_of(
        &self,
        p: &Prepared,
        ctx: &CheckContext,
        f: Found,
        lock: Option<ScopeLock<'_>>,
    ) -> Result<CheckOutcome, IdemError> {
        let r = &f.record;
        let matched = Some((f.stage, f.score));
        let base = |verdict, reason: String| CheckOutcome {
            matched,
            action_key: r.action_key.clone(),
            attempt: r.attempt,
            ..CheckOutcome::new(verdict, r.id.clone(), r.status, reason)
        };
        match r.repeat_outcome(ctx.now) {
            RepeatOutcome::Duplicate => {
                let mut o = base(
                    Verdict::Duplicate,
                    format!(
                        "repeats call {} ({} match, score {:.3}); its result is replayed",
                        r.id,
                        f.stage.name(),
                        f.score
                    ),
                );
                o.result_json = r.result_json.clone();
                o.replayed = true;
                o.replayed_cost = r.cost;
                Ok(o)
            }
            RepeatOutcome::InFlight => Ok(base(
                Verdict::InFlight,
                format!(
                    "repeats call {} ({} match), which is still running (lease until {} ms); wait for it, do not run again",
                    r.id,
                    f.stage.name(),
                    r.lease_until_ms
                ),
            )),
            RepeatOutcome::TakeOver
                if p.settings.tool_policy(&p.call.tool).on_lease_expiry == LeaseExpiry::Hold =>
            {
                let mut o = base(
                    Verdict::InFlight,
                    format!(
                        "repeats call {} whose lease expired without Complete: it may or may not \
                         have run; tool policy on_lease_expiry = hold: not run again until an \
                         operator completes call {}",
                        r.id, r.id
                    ),
                );
                o.previous_attempt_unknown = true;
                Ok(o)
            }
            RepeatOutcome::TakeOver => {
                let why = format!(
                    "repeats call {} whose lease expired without Complete: it may or may not have run; taking over as attempt {} of action {}",
                    r.id,
                    r.attempt + 1,
                    r.action_key
                );
                let mut o = self
                    .reserve(p, ctx, lock, NewCall::take_over(r), &why)
                    .await?;
                o.matched = matched;
                Ok(o)
            }
            RepeatOutcome::Retry => {
                let why = format!("repeats call {} which failed; a repeat may run again", r.id);
                let mut o = self.reserve(p, ctx, lock, NewCall::retry(r), &why).await?;
                o.matched = matched;
                Ok(o)
            }
            RepeatOutcome::Absent => {
                self.reserve(
                    p,
                    ctx,
                    lock,
                    NewCall::fresh(),
                    "no live earlier call matched",
                )
                .await
            }
        }
    }

    /// Records a new in-progress call (durably) and answers NEW. The record is registered
    /// with the pending inserts and indexed under the scope's `lock`, which is then let go:
    /// the commit (an fsync) runs without it, so checks of the scope do not queue behind it,
    /// and they see the record meanwhile (`PendingInserts`).
    async fn reserve(
        &self,
        p: &Prepared,
        ctx: &CheckContext,
        lock: Option<ScopeLock<'_>>,
        new: NewCall<'_>,
        reason: &str,
    ) -> Result<CheckOutcome, IdemError> {
        let now = ctx.now;
        let id = uuid::Uuid::now_v7().to_string();
        let (action_key, attempt) = match new.continues {
            Some(r) => (r.action_key.clone(), r.attempt.saturating_add(1)),
            None => (id.clone(), 1),
        };
        let (supersedes, previous_attempt_unknown) =
            (new.supersedes.clone(), new.previous_attempt_unknown);
        let record = Record {
            id,
            tenant: p.req.tenant.clone(),
            session: p.req.session.clone(),
            match_scope: p.scope.clone(),
            tool: p.call.tool.clone(),
            arguments_json: p.req.arguments_json.clone(),
            canonical_json: p.call.canonical_json.clone(),
            exact_hash: p.call.exact_hash.clone(),
            identity_fingerprint: p.call.identity_fingerprint.clone(),
            free_text: p.call.free_text_joined().to_string(),
            idempotency_key: p.req.idempotency_key.clone(),
            status: CallStatus::InProgress,
            result_json: None,
            error: None,
            cost: None,
            supersedes: supersedes.clone(),
            previous_attempt_unknown,
            created_at_ms: now,
            updated_at_ms: now,
            lease_until_ms: now + (p.settings.lease_secs as i64).saturating_mul(1000),
            expires_at_ms: now.saturating_add(p.settings.ttl_ms_for(&p.call.tool)),
            nearest_call_id: ctx.nearest.as_ref().map(|(id, _)| id.clone()),
            embedding: ctx.embedding.clone(),
            action_key,
            attempt,
            superseded_by: None,
            compensation_json: None,
            resource: ctx.window.as_ref().map(|w| ResourceMark {
                key: w.key.clone(),
                generation: w.generation,
                since_ms: w.started_ms.unwrap_or(now),
            }),
        };
        let semantic = self
            .semantic
            .as_ref()
            .filter(|_| p.mode == ToolMode::Semantic && !record.free_text.is_empty());
        // Later checks compare with this call: keep its prepared text.
        if let (Some(_), Some(q)) = (semantic, p.query.get()) {
            self.texts
                .put(&record.id, &record.free_text, q.as_ref().clone());
        }
        if let (Some(_), Some(w)) = (semantic, &ctx.words) {
            self.texts
                .put_words(&record.id, &record.free_text, w.as_ref().clone());
        }
        let ticket = self.pending.register(record);
        let stripe = self.stripe(&p.scope);
        stripe.inserts.fetch_add(1, Ordering::Release);
        // A rewording checked right after this lock is let go finds the vector.
        if let (Some(sim), Some(v)) = (semantic, &ticket.record().embedding) {
            sim.add_vector(&p.scope, &ticket.record().id, v.clone())
                .await;
        }
        // A take-over keeps the lock until the attempt it fences off is marked (Complete of
        // that attempt takes the lock too, so the two never interleave). Take-overs are rare.
        let lock = match new.taken_over() {
            Some(_) => lock,
            None => {
                drop(lock);
                None
            }
        };
        stripe.inserted.notify_waiters();
        // What is needed after the commit consumes the ticket (no copy of the vector).
        let (id, action_key, attempt) = {
            let r = ticket.record();
            (r.id.clone(), r.action_key.clone(), r.attempt)
        };
        let embedded = ticket.record().embedding.is_some();
        let to_backfill = semantic
            .filter(|_| !embedded)
            .map(|sim| (sim, ticket.record().clone()));
        let quota = self.config.limits.quota_for(&p.req.tenant);
        if let Err(e) = ticket.commit_unless_changed(p.seen.get(), &quota).await {
            if let Some(sim) = semantic
                && embedded
            {
                sim.unindex(&p.scope, &id).await;
            }
            self.texts.forget([id.as_str()]);
            return Err(e.into());
        }
        if let Some(old) = new.taken_over() {
            self.fence_off(old, &id).await?;
        }
        drop(lock);
        if let Some((sim, record)) = to_backfill {
            sim.backfill(&record, self.store.clone(), self.texts.clone());
        }
        Ok(CheckOutcome {
            previous_attempt_unknown,
            supersedes,
            action_key,
            attempt,
            ..CheckOutcome::new(Verdict::New, id, CallStatus::InProgress, reason.to_string())
        })
    }

    /// The window of the call's resource as the store has it now (tools with an inverse).
    async fn window(&self, p: &Prepared) -> Result<Option<ResourceWindow>, IdemError> {
        let Some((key, inverse)) = &p.resource else {
            return Ok(None);
        };
        let state = self.store.resource_state(&p.scope, key).await?;
        let key = key.clone();
        Ok(Some(match state {
            None => ResourceWindow {
                key,
                generation: 0,
                started_ms: None,
                floor_ms: Millis::MIN,
                closed_by: None,
            },
            Some(s) if s.tool == p.call.tool => ResourceWindow {
                key,
                generation: s.generation,
                started_ms: Some(s.since_ms),
                floor_ms: s.since_ms,
                closed_by: None,
            },
            Some(s) => ResourceWindow {
                key,
                generation: s.generation.saturating_add(1),
                started_ms: None,
                floor_ms: s.since_ms,
                closed_by: Some(inverse.clone()),
            },
        }))
    }

    /// Marks attempt `old` as taken over by `by`: its Complete is refused from now on. Under
    /// the scope's lock (as Complete is), so the status is read fresh.
    async fn fence_off(&self, old: &str, by: &str) -> Result<(), IdemError> {
        let Some(mut r) = self.store.get(old).await? else {
            return Ok(());
        };
        if r.status != CallStatus::InProgress || r.superseded_by.is_some() {
            return Ok(());
        }
        r.superseded_by = Some(by.to_string());
        r.updated_at_ms = self.clock.now_ms();
        self.store.update(&r).await?;
        self.stripe(&r.match_scope).completed.notify_waiters();
        Ok(())
    }

    /// RESAMPLE: always NEW, linked to the call it re-does.
    async fn resample(&self, p: &Prepared) -> Result<CheckOutcome, IdemError> {
        let Some(of) = p.req.retry_of.as_deref().filter(|s| !s.is_empty()) else {
            return Err(IdemError::InvalidArgument(
                "retry=RESAMPLE needs retry_of: the call_id whose result is being re-done".into(),
            ));
        };
        let original = self
            .store
            .get(of)
            .await?
            .filter(|r| r.tenant == p.req.tenant);
        let Some(original) = original else {
            return Err(IdemError::NotFound(format!(
                "retry_of names no call of this tenant: {of:?}"
            )));
        };
        let lock = self.lock_for(&p.scope).lock().await;
        let mut ctx = self.context(p, self.clock.now_ms());
        ctx.window = self.window(p).await?;
        let why = format!(
            "resample of call {}: a new execution, never a replay",
            original.id
        );
        let out = self
            .reserve(p, &ctx, Some(lock), NewCall::resample(&original.id), &why)
            .await?;
        self.count(p, &out);
        Ok(out)
    }

    /// Adds the check to its session's counters.
    fn count(&self, p: &Prepared, out: &CheckOutcome) {
        let delta = StatsDelta {
            verdict: out.verdict.name(),
            stage: out.matched.map(|(s, _)| match s {
                StageKind::Verify => "verified",
                other => other.name(),
            }),
            replayed: out.replayed,
            duplicate_prevented: matches!(out.verdict, Verdict::Duplicate | Verdict::InFlight),
            warnings: out.warnings.iter().map(|w| w.name()).collect(),
            cost_avoided: if out.replayed {
                out.replayed_cost.unwrap_or(0.0)
            } else {
                0.0
            },
        };
        self.record_stats(&p.req.tenant, &p.req.session, &delta);
    }
}

/// A held scope lock.
type ScopeLock<'a> = tokio::sync::MutexGuard<'a, ()>;

/// How a NEW relates to earlier calls.
struct NewCall<'r> {
    /// The call a RESAMPLE re-does.
    supersedes: Option<String>,
    /// A take-over: the earlier attempt may or may not have run.
    previous_attempt_unknown: bool,
    /// The earlier attempt of the same action (take-over, retry after failure): its action
    /// key is kept and the attempt number grows.
    continues: Option<&'r Record>,
}

impl<'r> NewCall<'r> {
    /// A call of its own: a new action.
    fn fresh() -> Self {
        Self {
            supersedes: None,
            previous_attempt_unknown: false,
            continues: None,
        }
    }

    /// A new execution the caller asked for (RESAMPLE): a new action, linked to `of`.
    fn resample(of: &str) -> Self {
        Self {
            supersedes: Some(of.to_string()),
            ..Self::fresh()
        }
    }

    /// The next attempt of `r`'s action after `r`'s lease expired.
    fn take_over(r: &'r Record) -> Self {
        Self {
            previous_attempt_unknown: true,
            continues: Some(r),
            ..Self::fresh()
        }
    }

    /// The attempt a take-over fences off (its earlier attempt, whose lease expired).
    fn taken_over(&self) -> Option<&'r str> {
        self.continues
            .filter(|_| self.previous_attempt_unknown)
            .map(|r| r.id.as_str())
    }

    /// The next attempt of `r`'s action after `r` failed.
    fn retry(r: &'r Record) -> Self {
        Self {
            continues: Some(r),
            ..Self::fresh()
        }
    }
}

/// How a wait for a scope's lock ended.
enum Waited<'a> {
    /// The lock is held.
    Locked(ScopeLock<'a>),
    /// An original recorded meanwhile settled the check.
    Settled(Box<CheckOutcome>),
    /// The deadline passed first.
    TimedOut,
}

/// What a check did before taking its scope's lock.
#[derive(Default)]
struct BeforeLock {
    /// The free text's embedding and the microseconds it took.
    embedding: Option<(Vec<f32>, u64)>,
    /// The free text's word vectors, from the same model call.
    words: Option<WordVectors>,
    /// Whether the call could be embedded at all (semantic mode, free text, an embedder).
    may_embed: bool,
    /// No candidate read ahead may match whatever the cosine (so nothing was embedded).
    none_comparable: bool,
    /// The report of an embedding that missed its deadline.
    missed: Option<StageReport>,
    /// Candidates and their fuzzy scan, with the stripe's insert count when they were read.
    read_ahead: Option<(u64, Arc<Vec<Candidate>>, FuzzyScan)>,
}

/// Charges the embedding, computed before the lock, to the semantic stage; when it missed its
/// deadline, says so whatever the stages reported after it.
fn charge_embedding(result: &mut FunnelResult, embed_micros: u64, missed: Option<StageReport>) {
    let missed_deadline = missed.is_some();
    let micros = missed.as_ref().map_or(embed_micros, |m| m.micros);
    match result
        .reports
        .iter_mut()
        .find(|r| r.stage == StageKind::Semantic)
    {
        Some(r) => r.micros += micros,
        None => result.reports.extend(missed),
    }
    if missed_deadline
        && matches!(result.finding, Finding::Pass)
        && result.stop == StopReason::Settled
    {
        result.stop = StopReason::Deadline;
    }
}

/// Most of a check's budget kept back from the embedding for the stages after it and the
/// durable write of a NEW (a quarter of the budget when that is less).
const MAX_WRITE_RESERVE: Duration = Duration::from_millis(12);

/// Times one check lets go of its lock to embed calls recorded while it waited for it (each
/// time only what is new since): more only while its embedding deadline allows.
const MAX_EMBED_RETRIES: u32 = 8;

/// Candidates without a vector embedded by one check, newest first (older ones are left to
/// their background embedding).
const MAX_EMBEDDED_CANDIDATES: usize = 4;

/// How long past its deadline a check waits for the record of an identical check under way
/// (when the client set no transport deadline): a late answer beats an error the client
/// retries into the same storm.
const IDENTICAL_WAIT: Duration = Duration::from_secs(2);

/// How often a check waiting past its deadline for an identical check looks again.
const IDENTICAL_POLL: Duration = Duration::from_millis(5);

/// How long a check may wait for its scope's lock even when its deadline is shorter.
const LOCK_GRACE: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests;
