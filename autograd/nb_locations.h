/* nb_locations.h — where in your code each op was called, for anomaly mode.
 *
 * Compile your own files with -DNB_LOCATIONS (nabla.h then includes this
 * header), or include it after nabla.h. Every op below becomes a
 * function-like macro that records __FILE__ and __LINE__ before calling the
 * real function, which has the same name (a macro is not expanded inside
 * its own expansion):
 *
 *   #define nb_matmul(...) \
 *       (nb__where_push("nb_matmul", __FILE__, __LINE__), nb__where_pop(nb_matmul(__VA_ARGS__)))
 *
 * With anomaly mode on (nb_set_detect_anomaly), each node keeps the place,
 * and an op that makes a NaN or an infinity, or whose backward does, is
 * reported with it: "nb_matmul: ... at train.c:42". The ops a layer or a loss runs
 * inside the library are reported at the line that called the layer
 * (nb_module_forward) or the loss. Taking an op's address (nb_relu without
 * parentheses) is unaffected.
 *
 * Cost: a push and a pop of a small per-thread stack per call, anomaly mode
 * on or off; without -DNB_LOCATIONS, nothing. Your own ops are placed the
 * same way with NB_AT:  #define swish(x) NB_AT(swish(x))
 *
 * The list covers nb_ops.h and the tensor-returning calls of nb_nn.h that
 * run ops; an op added to nb_ops.h without a line here still works, it is
 * only reported without a place.
 */
#ifndef NB_LOCATIONS_H
#define NB_LOCATIONS_H

#include "nabla.h"

#define NB_AT(call) (nb__where_push(NULL, __FILE__, __LINE__), nb__where_pop(call))
#define NB__AT(name, call) (nb__where_push(#name, __FILE__, __LINE__), nb__where_pop(call))

#define nb_add(...) NB__AT(nb_add, nb_add(__VA_ARGS__))
#define nb_sub(...) NB__AT(nb_sub, nb_sub(__VA_ARGS__))
#define nb_mul(...) NB__AT(nb_mul, nb_mul(__VA_ARGS__))
#define nb_div(...) NB__AT(nb_div, nb_div(__VA_ARGS__))
#define nb_pow(...) NB__AT(nb_pow, nb_pow(__VA_ARGS__))
#define nb_maximum(...) NB__AT(nb_maximum, nb_maximum(__VA_ARGS__))
#define nb_minimum(...) NB__AT(nb_minimum, nb_minimum(__VA_ARGS__))
#define nb_add_scalar(...) NB__AT(nb_add_scalar, nb_add_scalar(__VA_ARGS__))
#define nb_sub_scalar(...) NB__AT(nb_sub_scalar, nb_sub_scalar(__VA_ARGS__))
#define nb_rsub_scalar(...) NB__AT(nb_rsub_scalar, nb_rsub_scalar(__VA_ARGS__))
#define nb_mul_scalar(...) NB__AT(nb_mul_scalar, nb_mul_scalar(__VA_ARGS__))
#define nb_div_scalar(...) NB__AT(nb_div_scalar, nb_div_scalar(__VA_ARGS__))
#define nb_rdiv_scalar(...) NB__AT(nb_rdiv_scalar, nb_rdiv_scalar(__VA_ARGS__))
#define nb_pow_scalar(...) NB__AT(nb_pow_scalar, nb_pow_scalar(__VA_ARGS__))
#define nb_rpow_scalar(...) NB__AT(nb_rpow_scalar, nb_rpow_scalar(__VA_ARGS__))
#define nb_maximum_scalar(...) NB__AT(nb_maximum_scalar, nb_maximum_scalar(__VA_ARGS__))
#define nb_minimum_scalar(...) NB__AT(nb_minimum_scalar, nb_minimum_scalar(__VA_ARGS__))
#define nb_sum_to(...) NB__AT(nb_sum_to, nb_sum_to(__VA_ARGS__))
#define nb_expand(...) NB__AT(nb_expand, nb_expand(__VA_ARGS__))
#define nb_eq(...) NB__AT(nb_eq, nb_eq(__VA_ARGS__))
#define nb_ne(...) NB__AT(nb_ne, nb_ne(__VA_ARGS__))
#define nb_lt(...) NB__AT(nb_lt, nb_lt(__VA_ARGS__))
#define nb_le(...) NB__AT(nb_le, nb_le(__VA_ARGS__))
#define nb_gt(...) NB__AT(nb_gt, nb_gt(__VA_ARGS__))
#define nb_ge(...) NB__AT(nb_ge, nb_ge(__VA_ARGS__))
#define nb_gt_scalar(...) NB__AT(nb_gt_scalar, nb_gt_scalar(__VA_ARGS__))
#define nb_lt_scalar(...) NB__AT(nb_lt_scalar, nb_lt_scalar(__VA_ARGS__))
#define nb_where(...) NB__AT(nb_where, nb_where(__VA_ARGS__))
#define nb_neg(...) NB__AT(nb_neg, nb_neg(__VA_ARGS__))
#define nb_exp(...) NB__AT(nb_exp, nb_exp(__VA_ARGS__))
#define nb_log(...) NB__AT(nb_log, nb_log(__VA_ARGS__))
#define nb_sqrt(...) NB__AT(nb_sqrt, nb_sqrt(__VA_ARGS__))
#define nb_abs(...) NB__AT(nb_abs, nb_abs(__VA_ARGS__))
#define nb_sign(...) NB__AT(nb_sign, nb_sign(__VA_ARGS__))
#define nb_sin(...) NB__AT(nb_sin, nb_sin(__VA_ARGS__))
#define nb_cos(...) NB__AT(nb_cos, nb_cos(__VA_ARGS__))
#define nb_square(...) NB__AT(nb_square, nb_square(__VA_ARGS__))
#define nb_erf(...) NB__AT(nb_erf, nb_erf(__VA_ARGS__))
#define nb_tanh(...) NB__AT(nb_tanh, nb_tanh(__VA_ARGS__))
#define nb_sigmoid(...) NB__AT(nb_sigmoid, nb_sigmoid(__VA_ARGS__))
#define nb_relu(...) NB__AT(nb_relu, nb_relu(__VA_ARGS__))
#define nb_leaky_relu(...) NB__AT(nb_leaky_relu, nb_leaky_relu(__VA_ARGS__))
#define nb_elu(...) NB__AT(nb_elu, nb_elu(__VA_ARGS__))
#define nb_gelu(...) NB__AT(nb_gelu, nb_gelu(__VA_ARGS__))
#define nb_softplus(...) NB__AT(nb_softplus, nb_softplus(__VA_ARGS__))
#define nb_clamp(...) NB__AT(nb_clamp, nb_clamp(__VA_ARGS__))
#define nb_sum(...) NB__AT(nb_sum, nb_sum(__VA_ARGS__))
#define nb_mean(...) NB__AT(nb_mean, nb_mean(__VA_ARGS__))
#define nb_max(...) NB__AT(nb_max, nb_max(__VA_ARGS__))
#define nb_min(...) NB__AT(nb_min, nb_min(__VA_ARGS__))
#define nb_var(...) NB__AT(nb_var, nb_var(__VA_ARGS__))
#define nb_logsumexp(...) NB__AT(nb_logsumexp, nb_logsumexp(__VA_ARGS__))
#define nb_argmax(...) NB__AT(nb_argmax, nb_argmax(__VA_ARGS__))
#define nb_argmin(...) NB__AT(nb_argmin, nb_argmin(__VA_ARGS__))
#define nb_softmax(...) NB__AT(nb_softmax, nb_softmax(__VA_ARGS__))
#define nb_log_softmax(...) NB__AT(nb_log_softmax, nb_log_softmax(__VA_ARGS__))
#define nb_matmul(...) NB__AT(nb_matmul, nb_matmul(__VA_ARGS__))
#define nb_transpose(...) NB__AT(nb_transpose, nb_transpose(__VA_ARGS__))
#define nb_permute(...) NB__AT(nb_permute, nb_permute(__VA_ARGS__))
#define nb_reshape(...) NB__AT(nb_reshape, nb_reshape(__VA_ARGS__))
#define nb_flatten(...) NB__AT(nb_flatten, nb_flatten(__VA_ARGS__))
#define nb_squeeze(...) NB__AT(nb_squeeze, nb_squeeze(__VA_ARGS__))
#define nb_unsqueeze(...) NB__AT(nb_unsqueeze, nb_unsqueeze(__VA_ARGS__))
#define nb_clone(...) NB__AT(nb_clone, nb_clone(__VA_ARGS__))
#define nb_slice(...) NB__AT(nb_slice, nb_slice(__VA_ARGS__))
#define nb_index_select(...) NB__AT(nb_index_select, nb_index_select(__VA_ARGS__))
#define nb_gather(...) NB__AT(nb_gather, nb_gather(__VA_ARGS__))
#define nb_index_add(...) NB__AT(nb_index_add, nb_index_add(__VA_ARGS__))
#define nb_scatter_add(...) NB__AT(nb_scatter_add, nb_scatter_add(__VA_ARGS__))
#define nb_concat(...) NB__AT(nb_concat, nb_concat(__VA_ARGS__))
#define nb_stack(...) NB__AT(nb_stack, nb_stack(__VA_ARGS__))
#define nb_mse_loss(...) NB__AT(nb_mse_loss, nb_mse_loss(__VA_ARGS__))
#define nb_l1_loss(...) NB__AT(nb_l1_loss, nb_l1_loss(__VA_ARGS__))
#define nb_huber_loss(...) NB__AT(nb_huber_loss, nb_huber_loss(__VA_ARGS__))
#define nb_bce_loss(...) NB__AT(nb_bce_loss, nb_bce_loss(__VA_ARGS__))
#define nb_bce_with_logits_loss(...) NB__AT(nb_bce_with_logits_loss, nb_bce_with_logits_loss(__VA_ARGS__))
#define nb_cross_entropy_loss(...) NB__AT(nb_cross_entropy_loss, nb_cross_entropy_loss(__VA_ARGS__))
#define nb_nll_loss(...) NB__AT(nb_nll_loss, nb_nll_loss(__VA_ARGS__))
#define nb_conv2d(...) NB__AT(nb_conv2d, nb_conv2d(__VA_ARGS__))
#define nb_conv_transpose2d(...) NB__AT(nb_conv_transpose2d, nb_conv_transpose2d(__VA_ARGS__))
#define nb_conv2d_weight_grad(...) NB__AT(nb_conv2d_weight_grad, nb_conv2d_weight_grad(__VA_ARGS__))
#define nb_max_pool2d(...) NB__AT(nb_max_pool2d, nb_max_pool2d(__VA_ARGS__))
#define nb_avg_pool2d(...) NB__AT(nb_avg_pool2d, nb_avg_pool2d(__VA_ARGS__))
#define nb_adaptive_avg_pool2d(...) NB__AT(nb_adaptive_avg_pool2d, nb_adaptive_avg_pool2d(__VA_ARGS__))
#define nb_layer_norm(...) NB__AT(nb_layer_norm, nb_layer_norm(__VA_ARGS__))
#define nb_batch_norm(...) NB__AT(nb_batch_norm, nb_batch_norm(__VA_ARGS__))
#define nb_embedding(...) NB__AT(nb_embedding, nb_embedding(__VA_ARGS__))
#define nb_module_forward(...) NB__AT(nb_module_forward, nb_module_forward(__VA_ARGS__))
#define nb_categorical_crossentropy(...) NB__AT(nb_categorical_crossentropy, nb_categorical_crossentropy(__VA_ARGS__))
#define nb_sparse_categorical_crossentropy(...) NB__AT(nb_sparse_categorical_crossentropy, nb_sparse_categorical_crossentropy(__VA_ARGS__))

#endif
