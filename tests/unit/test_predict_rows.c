/* predict's scoring and metrics (include/softprompt/predict.h): the softmax in double, each
 * prompt's prediction (the largest logit, the lower class on a tie, as eval), the ensemble's mean
 * and vote with its documented tie rule; accuracy, macro-F1 and the majority baseline from
 * confusion counts worked out by hand. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "softprompt/predict.h"
#include "testutil.h"

static void score(const float *logits, int K, int C, int *pred, double *mean, int *predicted,
                  int *vote) {
    double probs[64];
    sp_predict_score(logits, K, C, probs, pred, mean, predicted, vote);
    for (int k = 0; k < K; k++) {
        double z = 0, mx = -INFINITY;
        for (int c = 0; c < C; c++) mx = fmax(mx, logits[k * C + c]);
        for (int c = 0; c < C; c++) z += exp(logits[k * C + c] - mx);
        for (int c = 0; c < C; c++)
            ck_assert_double_eq_tol(probs[k * C + c], exp(logits[k * C + c] - mx) / z, 1e-15);
    }
}

START_TEST(one_prompt_is_its_argmax) {
    float l[3] = {0.5f, 2.0f, 2.0f}; /* a tie between 1 and 2: the lower class, as eval */
    int pred[1], predicted, vote;
    double mean[3];
    score(l, 1, 3, pred, mean, &predicted, &vote);
    ck_assert_int_eq(pred[0], 1);
    ck_assert_int_eq(predicted, 1);
    ck_assert_int_eq(vote, 1);
}
END_TEST

START_TEST(ensemble_mean_and_vote) {
    /* three prompts, three classes: votes 0, 0, 2 -> vote 0; the mean favours 2 */
    float l[9] = {1.0f, 0.9f, 0.0f, 1.0f, 0.9f, 0.0f, -5.0f, -5.0f, 9.0f};
    int pred[3], predicted, vote;
    double mean[3];
    score(l, 3, 3, pred, mean, &predicted, &vote);
    ck_assert_int_eq(pred[0], 0);
    ck_assert_int_eq(pred[1], 0);
    ck_assert_int_eq(pred[2], 2);
    ck_assert_int_eq(vote, 0);
    ck_assert_int_eq(predicted, 2);
    ck_assert_double_eq_tol(mean[0] + mean[1] + mean[2], 1.0, 1e-15);
}
END_TEST

START_TEST(vote_tie_goes_to_the_larger_mean) {
    /* two prompts disagree (0 and 1): a tie, won by class 1, whose mean probability is larger,
     * although class 0 is lower */
    float l[4] = {0.1f, 0.0f, 0.0f, 3.0f};
    int pred[2], predicted, vote;
    double mean[2];
    score(l, 2, 2, pred, mean, &predicted, &vote);
    ck_assert_int_eq(pred[0], 0);
    ck_assert_int_eq(pred[1], 1);
    ck_assert(mean[1] > mean[0]);
    ck_assert_int_eq(vote, 1);
    /* the same with the classes swapped: class 0 wins */
    float m[4] = {0.0f, 0.1f, 3.0f, 0.0f};
    score(m, 2, 2, pred, mean, &predicted, &vote);
    ck_assert_int_eq(vote, 0);
}
END_TEST

START_TEST(metrics_from_counts) {
    /* rows: label, columns: prediction. 3 classes; class 2 never occurs nor is predicted.
     *   label 0: 5 right, 1 as 1;  label 1: 2 as 0, 2 right
     * accuracy 7/10; F1(0) = 2*5 / (2*5 + 2 + 1) = 10/13; F1(1) = 2*2 / (4 + 1 + 2) = 4/7;
     * macro-F1 over the classes that occur: (10/13 + 4/7) / 2; majority class 0: 6/10. */
    int64_t conf[9] = {5, 1, 0, 2, 2, 0, 0, 0, 0};
    sp_predict_metrics m = {
        .n_predictors = 1, .n_classes = 3, .n_examples = 12, .n_labelled = 10, .confusion = conf};
    ck_assert_double_eq_tol(sp_predict_accuracy(&m, 0), 0.7, 1e-15);
    ck_assert_double_eq_tol(sp_predict_macro_f1(&m, 0), (10.0 / 13 + 4.0 / 7) / 2, 1e-15);
    double base;
    ck_assert_int_eq(sp_predict_majority(&m, &base), 0);
    ck_assert_double_eq_tol(base, 0.6, 1e-15);
    sp_predict_metrics none = {.n_predictors = 1, .n_classes = 3, .confusion = conf};
    ck_assert(isnan(sp_predict_accuracy(&none, 0)));
    ck_assert(isnan(sp_predict_macro_f1(&none, 0)));
}
END_TEST

int main(void) {
    const TTest *tests[] = {one_prompt_is_its_argmax, ensemble_mean_and_vote,
                            vote_tie_goes_to_the_larger_mean, metrics_from_counts, NULL};
    return tu_main("predict_rows", tests, NULL, NULL);
}
