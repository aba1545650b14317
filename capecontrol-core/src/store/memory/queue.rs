//! [`QueueStore`] on [`MemoryStore`]: enqueue, claim, leases, the journal, finish, release,
//! reclaim, cancel, listings and live events.

use super::*;

#[async_trait]
impl QueueStore for MemoryStore {
    async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        task.check()?;
        let now = self.now();
        // The record, its entry, its first event and its audit rows are built before the lock
        // is taken (a submission's lock is one the workers' finishes wait for); an enqueue
        // that is refused below drops them.
        let task_policy_allowed = task.policy_allowed;
        // Shared by the entry and the caller: one record, not a copy for each.
        let record = Arc::new(TaskRecord {
            id: task.id,
            user_id: task.principal.user_id.clone(),
            agent_id: task.agent_id,
            version: task.version,
            task: task.task,
            input: task.input,
            output: None,
            status: TaskStatus::Queued,
            principal: task.principal,
            priority: task.priority,
            run_at: task.run_at.map_or(now, micros),
            attempts: 0,
            max_attempts: task.max_attempts,
            concurrency_limit: task.concurrency_limit,
            timeout: task.timeout,
            idempotency_key: task.idempotency_key,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            error: None,
            error_message: None,
            started_at: None,
            completed_at: None,
            traceparent: task.traceparent,
            parent_id: task.parent_id,
            created_at: now,
        });
        let mut entry = Box::new(TaskEntry {
            order: 0,
            record: Arc::clone(&record),
            token: None,
            steps: BTreeMap::new(),
            // Room for the three events of every task that runs (queued, started, an end):
            // the store keeps them, and a vector grown by push kept room for four.
            events: Vec::with_capacity(3),
            indexed: Indexed::None,
        });
        let kind = TaskEventKind::Queued {
            trigger: task.trigger,
        };
        let event = lifecycle_event(&mut entry, kind, now);
        // The policy decision that let the task in comes first (the store's own row, below),
        // then the caller's audit.
        let audit: Vec<NewAuditEvent> = task
            .audit
            .into_iter()
            .map(|extra| extra_audit(&record, extra))
            .collect();
        // Then the store's own row (`task.queued`), with the submitter's address.
        let client = trail::client(
            record.principal.ip_address,
            record.principal.user_agent.clone(),
        );

        let mut state = self.lock();
        let seen = record
            .idempotency_key
            .as_ref()
            .and_then(|key| {
                let user_id = record.user_id.clone();
                state.idempotency.get(&(user_id, key.clone()))
            })
            .and_then(|id| state.tasks.get(id));
        if let Some(existing) = seen {
            return Ok(Enqueued {
                task: existing.record.clone(),
                created: false,
            });
        }
        if state.tasks.contains_key(&record.id) {
            return Err(Error::conflict(format!("task {} exists", record.id)));
        }
        if !state.agents.contains_key(&record.agent_id) {
            return Err(Error::not_found("agent", &record.agent_id));
        }
        if let Some(parent) = record.parent_id
            && !state.tasks.contains_key(&parent)
        {
            return Err(Error::not_found("task", parent.to_string()));
        }
        for a in &audit {
            state.check_audit_refs(a, Some(record.id))?;
        }
        entry.order = state.next();
        let task = state.names.get_str(&record.task);
        let version = state.names.get_str(&record.version);
        if task_policy_allowed {
            let allowed = trail::TaskRowKind::Allowed {
                task: Arc::clone(&task),
                version: Arc::clone(&version),
            };
            state.append_task_row(&record, allowed, client.clone(), now);
        }
        for a in audit {
            state.append_audit(a, now);
        }
        let queued = trail::TaskRowKind::Queued {
            task,
            version,
            priority: record.priority,
        };
        state.append_task_row(&record, queued, client, now);
        if let Some(key) = &record.idempotency_key {
            state
                .idempotency
                .insert((record.user_id.clone(), key.clone()), record.id);
        }
        if let Some(parent) = record.parent_id {
            state.children.entry(parent).or_default().push(record.id);
        }
        state.tasks.insert(record.id, entry);
        state.sync(record.id, now);
        self.send_events(state, [event]);
        self.wake();
        Ok(Enqueued {
            task: record,
            created: true,
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut state = self.lock();
        state.promote_due(now);
        // Merge the agents' ready sets in order (priority, then age), taking what the agent
        // filter and the per-agent concurrency limits allow. An agent whose next task is over
        // its limit drops out of the merge, so its other queued tasks are never visited.
        let st = &*state;
        let mut due: Vec<Uuid> = Vec::new();
        let mut planned: HashMap<&str, usize> = HashMap::new();
        let mut cursors = Vec::new();
        let mut heads = BinaryHeap::new();
        for (agent, set) in &st.ready {
            if request.agents.as_ref().is_some_and(|a| !a.contains(agent)) {
                continue;
            }
            let mut it = set.iter();
            if let Some(&key) = it.next() {
                heads.push(Reverse((key, cursors.len())));
            }
            cursors.push((agent.as_str(), it));
        }
        while due.len() < request.limit {
            let Some(Reverse((key, c))) = heads.pop() else {
                break;
            };
            let (agent, it) = &mut cursors[c];
            let id = key.2;
            let Some(t) = st.tasks.get(&id) else {
                continue;
            };
            let r = &t.record;
            if r.run_at <= now {
                let n = planned
                    .entry(*agent)
                    .or_insert_with(|| st.running_of_agent(agent));
                if *n >= r.concurrency_limit as usize {
                    continue;
                }
                *n += 1;
                due.push(id);
            }
            if let Some(&next) = it.next() {
                heads.push(Reverse((next, c)));
            }
        }
        drop(cursors);
        let mut claimed = Vec::with_capacity(due.len());
        let mut sent = Vec::with_capacity(due.len());
        let expires_at = now + to_chrono(request.lease);
        for id in due {
            let Some(entry) = state.tasks.get_mut(&id) else {
                continue;
            };
            let record = entry.record_mut();
            move_task(record, TaskStatus::Running)?;
            record.attempts += 1;
            record.lease_owner = Some(request.worker.clone());
            record.lease_expires_at = Some(expires_at);
            record.started_at = Some(now);
            let attempt = record.attempts;
            let token = Uuid::new_v4();
            entry.token = Some(token);
            let event = lifecycle_event(
                entry,
                TaskEventKind::Started {
                    attempt,
                    worker: request.worker.clone(),
                },
                now,
            );
            sent.push(event);
            let task = Arc::clone(&entry.record);
            claimed.push(Claimed {
                lease: Lease {
                    task_id: id,
                    owner: request.worker.clone(),
                    token,
                    expires_at,
                },
                steps: entry.steps.values().cloned().collect(),
                last_seq: entry.last_seq(),
                task: Arc::clone(&task),
                catalog: None,
            });
            let started = trail::TaskRowKind::Started {
                attempt,
                worker: state.names.get_str(&request.worker),
            };
            state.append_task_row(&task, started, None, now);
            state.sync(id, now);
            // The attempt's registry checks, from the same state: no second lock per attempt.
            if let Some(c) = claimed.last_mut() {
                c.catalog = Some(state.claimed_catalog(&c.task));
            }
        }
        self.send_events(state, sent);
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Heartbeat> {
        let now = self.now();
        let mut state = self.lock();
        let entry = state.fenced(lease)?;
        let expires_at = now + to_chrono(extend);
        entry.record_mut().lease_expires_at = Some(expires_at);
        Ok(Heartbeat {
            expires_at,
            cancel_requested: entry.record.cancel_requested,
        })
    }

    async fn journal(&self, lease: &Lease, write: JournalWrite) -> Result<()> {
        write.check()?;
        let now = self.now();
        check_events(lease.task_id, &write.events)?;
        let mut state = self.lock();
        state.fenced(lease)?;
        for a in &write.audit {
            state.check_audit_refs(a, None)?;
        }
        let entry = state.fenced(lease)?;
        check_continues(entry, &write.events)?;
        put_steps(entry, write.step);
        let events = persist_events(entry, write.events);
        let record = entry.record.clone();
        for a in write.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        self.send_events(state, events);
        Ok(())
    }

    async fn finish(&self, lease: &Lease, finish: Finish) -> Result<Arc<TaskRecord>> {
        finish.check()?;
        let now = self.now();
        check_events(lease.task_id, &finish.events)?;
        let mut state = self.lock();
        state.fenced(lease)?;
        for a in &finish.audit {
            state.check_audit_refs(a, None)?;
        }
        let entry = state.fenced(lease)?;
        check_continues(entry, &finish.events)?;
        // Check the transition before writing anything.
        let target = match &finish.outcome {
            Outcome::Completed { .. } => TaskStatus::Completed,
            Outcome::Failed { .. } => TaskStatus::Failed,
            Outcome::Cancelled => TaskStatus::Cancelled,
        };
        entry.record.status.transition(target)?;
        put_steps(entry, finish.steps);
        let mut events = persist_events(entry, finish.events);
        let record = entry.record_mut();
        let attempt = record.attempts;
        // The end's audit row: the store's own task row where its payload is only the attempt.
        let (kind, row) = match finish.outcome {
            Outcome::Completed { output } => {
                move_task(record, TaskStatus::Completed)?;
                record.output = Some(output.clone());
                record.completed_at = Some(now);
                (
                    TaskEventKind::Completed { output },
                    EndRow::Task(trail::TaskRowKind::Ended {
                        event_type: "task.completed",
                        attempt,
                    }),
                )
            }
            // A cancel requested during the attempt wins over a retry or a failure: the task
            // ends cancelled (its last error kept), whatever path the attempt took.
            Outcome::Failed { error, .. } if record.cancel_requested => {
                move_task(record, TaskStatus::Cancelled)?;
                record.error_message = Some(error.to_string());
                record.error = Some(error.clone());
                record.completed_at = Some(now);
                (
                    TaskEventKind::Cancelled,
                    EndRow::Event(
                        "task.cancelled",
                        json!({ "attempt": attempt, "error": error.to_string(), "category": error.category() }),
                    ),
                )
            }
            Outcome::Failed { error, retry_at } => {
                move_task(record, TaskStatus::Failed)?;
                record.error_message = Some(error.to_string());
                record.error = Some(error.clone());
                match retry_at {
                    Some(at) => {
                        move_task(record, TaskStatus::Queued)?;
                        record.run_at = micros(at);
                        let delay_ms = millis_between(now, at);
                        (
                            TaskEventKind::Retrying {
                                attempt,
                                delay_ms,
                                error: error.clone(),
                            },
                            EndRow::Event(
                                "task.retrying",
                                json!({ "attempt": attempt, "delay_ms": delay_ms, "error": error.to_string(), "category": error.category() }),
                            ),
                        )
                    }
                    None => {
                        record.completed_at = Some(now);
                        (
                            TaskEventKind::Failed {
                                error: error.clone(),
                            },
                            EndRow::Event(
                                "task.failed",
                                json!({ "attempt": attempt, "error": error.to_string(), "category": error.category() }),
                            ),
                        )
                    }
                }
            }
            Outcome::Cancelled => {
                move_task(record, TaskStatus::Cancelled)?;
                record.completed_at = Some(now);
                (
                    TaskEventKind::Cancelled,
                    EndRow::Task(trail::TaskRowKind::Ended {
                        event_type: "task.cancelled",
                        attempt,
                    }),
                )
            }
        };
        clear_lease(entry);
        events.push(lifecycle_event(entry, kind, now));
        let record = entry.record.clone();
        state.sync(record.id, now);
        match row {
            EndRow::Task(kind) => state.append_task_row(&record, kind, None, now),
            EndRow::Event(audit_type, payload) => {
                state.append_audit(task_audit(&record, audit_type, payload), now);
            }
        }
        for a in finish.audit {
            state.append_audit(extra_audit(&record, a), now);
        }
        self.send_events(state, events);
        if record.status == TaskStatus::Queued {
            self.wake();
        }
        Ok(record)
    }

    async fn release(
        &self,
        lease: &Lease,
        events: Vec<TaskEvent>,
        steps: Vec<StepRecord>,
    ) -> Result<()> {
        crate::store::check_steps(&steps)?;
        let now = self.now();
        check_events(lease.task_id, &events)?;
        let mut state = self.lock();
        let entry = state.fenced(lease)?;
        check_continues(entry, &events)?;
        put_steps(entry, steps);
        let mut sent = persist_events(entry, events);
        let record = entry.record_mut();
        let (kind, audit_type) = if record.cancel_requested {
            move_task(record, TaskStatus::Cancelled)?;
            record.completed_at = Some(now);
            (TaskEventKind::Cancelled, "task.cancelled")
        } else {
            // Not a state-machine transition: the claim is undone, the attempt not counted.
            record.status = TaskStatus::Queued;
            record.attempts = record.attempts.saturating_sub(1);
            (TaskEventKind::Queued { trigger: None }, "task.released")
        };
        clear_lease(entry);
        sent.push(lifecycle_event(entry, kind, now));
        let record = entry.record.clone();
        state.sync(record.id, now);
        state.append_audit(
            task_audit(&record, audit_type, json!({ "worker": lease.owner })),
            now,
        );
        self.send_events(state, sent);
        self.wake();
        Ok(())
    }

    async fn reclaim_expired(&self) -> Result<Vec<Uuid>> {
        let now = self.now();
        let mut state = self.lock();
        let expired: Vec<Uuid> = state
            .running
            .iter()
            .filter_map(|id| state.tasks.get(id))
            .filter(|t| t.record.lease_expires_at.is_some_and(|at| at <= now))
            .map(|t| t.record.id)
            .collect();
        let mut sent = Vec::new();
        let mut requeued = false;
        for id in &expired {
            let Some(entry) = state.tasks.get_mut(id) else {
                continue;
            };
            let attempt = entry.record.attempts;
            let owner = entry.record.lease_owner.clone();
            let error = Error::resource(format!(
                "the lease of attempt {attempt} expired (worker {})",
                owner.as_deref().unwrap_or("unknown")
            ));
            let record = entry.record_mut();
            let (kind, audit_type) = if record.cancel_requested {
                move_task(record, TaskStatus::Cancelled)?;
                record.completed_at = Some(now);
                (TaskEventKind::Cancelled, "task.cancelled")
            } else {
                move_task(record, TaskStatus::Failed)?;
                record.error_message = Some(error.to_string());
                record.error = Some(error.clone());
                if attempt < record.max_attempts {
                    move_task(record, TaskStatus::Queued)?;
                    record.run_at = now;
                    requeued = true;
                    (
                        TaskEventKind::Retrying {
                            attempt,
                            delay_ms: 0,
                            error: error.clone(),
                        },
                        "task.retrying",
                    )
                } else {
                    record.completed_at = Some(now);
                    (
                        TaskEventKind::Failed {
                            error: error.clone(),
                        },
                        "task.failed",
                    )
                }
            };
            clear_lease(entry);
            sent.push(lifecycle_event(entry, kind, now));
            let record = entry.record.clone();
            state.sync(record.id, now);
            state.append_audit(
                task_audit(
                    &record,
                    audit_type,
                    json!({ "attempt": attempt, "reason": "lease_expired", "worker": owner }),
                ),
                now,
            );
        }
        self.send_events(state, sent);
        if requeued {
            self.wake();
        }
        Ok(expired)
    }

    async fn cancel(&self, task_id: Uuid, by: &Principal) -> Result<TaskRecord> {
        let now = self.now();
        let mut state = self.lock();
        let status = state
            .tasks
            .get(&task_id)
            .map(|t| t.record.status)
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        if status.is_final() {
            return Err(Error::conflict(format!(
                "task {task_id} is {status} and cannot be cancelled"
            )));
        }
        let mut sent = Vec::new();
        let record = cancel_one(&mut state, task_id, by, json!({}), now, &mut sent)?;
        // The cascade: every descendant that is not final, breadth first.
        let mut frontier = vec![task_id];
        while let Some(parent) = frontier.pop() {
            let children = state.children.get(&parent).cloned().unwrap_or_default();
            for child in children {
                frontier.push(child);
                if state
                    .tasks
                    .get(&child)
                    .is_some_and(|t| !t.record.status.is_final())
                {
                    let payload = json!({ "cascade_from": task_id });
                    cancel_one(&mut state, child, by, payload, now, &mut sent)?;
                }
            }
        }
        self.send_events(state, sent);
        Ok(record)
    }

    async fn get_task(&self, task_id: Uuid) -> Result<TaskRecord> {
        // The shared record under the lock, its copy after it.
        let record = self
            .lock()
            .tasks
            .get(&task_id)
            .map(|t| Arc::clone(&t.record))
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
        Ok(TaskRecord::clone(&record))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let state = self.lock();
        let mut out: Vec<&TaskEntry> = state
            .tasks
            .values()
            .map(|t| &**t)
            .filter(|t| {
                filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| &t.record.user_id == u)
            })
            .filter(|t| {
                filter
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| &t.record.agent_id == a)
            })
            .filter(|t| filter.status.is_none_or(|s| t.record.status == s))
            .filter(|t| {
                filter
                    .parent_id
                    .is_none_or(|p| t.record.parent_id == Some(p))
            })
            .collect();
        out.sort_by(|a, b| {
            b.record
                .created_at
                .cmp(&a.record.created_at)
                .then(b.order.cmp(&a.order))
        });
        // The page's shared records under the lock, their copies after it (as `get_task`).
        let page: Vec<Arc<TaskRecord>> = out
            .into_iter()
            .take(filter.page_size())
            .map(|t| Arc::clone(&t.record))
            .collect();
        drop(state);
        Ok(page.iter().map(|r| TaskRecord::clone(r)).collect())
    }

    async fn steps(&self, task_id: Uuid) -> Result<Vec<StepRecord>> {
        self.lock()
            .tasks
            .get(&task_id)
            .map(|t| t.steps.values().cloned().collect())
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))
    }

    async fn events(&self, task_id: Uuid, after: u64) -> Result<Vec<TaskEvent>> {
        self.lock()
            .tasks
            .get(&task_id)
            .map(|t| t.events.iter().filter(|e| e.seq > after).cloned().collect())
            .ok_or_else(|| Error::not_found("task", task_id.to_string()))
    }

    async fn publish(&self, mut event: TaskEvent) -> Result<()> {
        event.at = micros(event.at);
        // Not a write of the state: sent in order with the writes' events.
        let _order = self.send_order.lock();
        self.broadcast([event]);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    fn wakeups(&self) -> broadcast::Receiver<()> {
        self.wakeups.subscribe()
    }

    async fn queue_depth(&self) -> Result<u64> {
        let state = self.lock();
        let n = state.ready_len + state.delayed.len();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// Cancels the task `task_id`, which is not final: a queued or waiting one at once (a
/// `cancelled` event into `sent`, a `task.cancelled` audit row), a running one by its flag (a
/// `task.cancel_requested` audit row); `payload` is the audit row's.
fn cancel_one(
    state: &mut State,
    task_id: Uuid,
    by: &Principal,
    payload: serde_json::Value,
    now: DateTime<Utc>,
    sent: &mut Vec<TaskEvent>,
) -> Result<TaskRecord> {
    let entry = state
        .tasks
        .get_mut(&task_id)
        .ok_or_else(|| Error::not_found("task", task_id.to_string()))?;
    let event_type = match entry.record.status {
        TaskStatus::Queued | TaskStatus::Waiting => {
            let record = entry.record_mut();
            move_task(record, TaskStatus::Cancelled)?;
            record.completed_at = Some(now);
            sent.push(lifecycle_event(entry, TaskEventKind::Cancelled, now));
            "task.cancelled"
        }
        TaskStatus::Running => {
            entry.record_mut().cancel_requested = true;
            "task.cancel_requested"
        }
        other => {
            return Err(Error::conflict(format!(
                "task {task_id} is {other} and cannot be cancelled"
            )));
        }
    };
    let record = entry.record.clone();
    // A cancelled waiting task's wait goes with it (a sweep only reads the waits while some
    // task waits, so it is not there to drop a stale one at its deadline).
    state.waits.remove(&task_id);
    state.sync(task_id, now);
    let mut audit = NewAuditEvent::by(by, event_type, payload).task(task_id);
    audit.agent_id = Some(record.agent_id.clone());
    state.append_audit(audit, now);
    Ok(TaskRecord::clone(&record))
}

/// The audit row a finish writes.
enum EndRow {
    /// One of the store's own task rows.
    Task(trail::TaskRowKind),
    /// A row of this type and payload.
    Event(&'static str, serde_json::Value),
}
